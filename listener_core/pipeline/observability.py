"""Counts and times every RPC, and writes one log line per admin action.

The outermost stage of the pipeline (``listener_core.server.build_pipeline`` puts it first), so
it sees the final status of every call: the ones the error stage mapped, and the ones
authentication refused before any behaviour ran.

Admin actions are the changing methods of PluginService and ListenerInstanceService (every
method but ``Get…``/``List…``). Their log line names the action, the resource, the outcome and
the caller (a token digest prefix or the peer host, never the token), and nothing from the
request body: instance params may hold secrets.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from listener_core.auth import caller_key
from listener_core.metrics import ServerMetrics
from listener_core.pipeline.stage import Layer, wrap_unary_response

log = logging.getLogger("listener.audit")

Behavior = Callable[[Any, Any], Any]
_ADMIN_SERVICES = ("listener.v1.PluginService", "listener.v1.ListenerInstanceService")
_CODES = {c.value[0]: c for c in grpc.StatusCode}
# Request fields naming the resource an admin action is about, in the order they are tried.
_NAME_PATHS = (
    ("name",),
    ("parent",),
    ("plugin", "name"),
    ("listener_instance", "name"),
)
_ID_FIELDS = (
    ("plugin_id", "plugins/"),
    ("listener_instance_id", "listenerInstances/"),
    ("package_sha256", "packages/"),
)


def is_admin_action(method: str) -> bool:
    service, _, name = method.strip("/").partition("/")
    return service in _ADMIN_SERVICES and not name.startswith(("Get", "List"))


def _code_name(context: Any) -> str:
    code = context.code()
    if isinstance(code, int) and code in _CODES:
        code = _CODES[code]
    return str(code.name) if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _field(message: Any, path: tuple[str, ...]) -> str:
    for part in path:
        descriptor = getattr(message, "DESCRIPTOR", None)
        if descriptor is None or part not in descriptor.fields_by_name:
            return ""
        message = getattr(message, part)
    return message if isinstance(message, str) else ""


def resource_of(request: Any, response: Any) -> str:
    """The resource name an admin action acted on, from its answer or its request."""
    found = _field(response, ("name",))
    if found:
        return found
    if _field(response, ("sha256",)):
        return "packages/" + _field(response, ("sha256",))
    for path in _NAME_PATHS:
        found = _field(request, path)
        if found:
            return found
    for field, prefix in _ID_FIELDS:
        found = _field(request, (field,))
        if found:
            return prefix + found
    # An install that failed before its manifest named the plugin: the package it sent.
    package = getattr(request, "package", None)
    if isinstance(package, bytes) and package:
        return "packages/" + hashlib.sha256(package).hexdigest()
    return ""


class Observability(Layer):
    """RPC counts and latency by method and code; an audit line per admin action."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.response_streaming:
            return handler  # streaming answers (health Watch, reflection) are not measured
        kind = "unary" if handler.unary_unary is not None else "client_stream"
        return wrap_unary_response(handler, self._wrapper(method, is_admin_action(method), kind))

    def _wrapper(self, method: str, admin: bool, kind: str) -> Callable[[Behavior], Behavior]:
        seconds = self.metrics.rpc_seconds.labels(method)
        counts = self.metrics.rpcs
        service, _, name = method.strip("/").partition("/")
        grpc_labels = (kind, service, name)
        started_count = self.metrics.grpc_started.labels(*grpc_labels)
        handling = self.metrics.grpc_handling_seconds.labels(*grpc_labels)
        handled = self.metrics.grpc_handled
        # The children for OK, looked up once: labels() takes a lock and builds a key, and
        # nearly every call ends OK (two of them were a sixth of a publish's Python time).
        ok_count = counts.labels(method, "OK")
        ok_handled = handled.labels(*grpc_labels, "OK")

        def wrap(behavior: Behavior) -> Behavior:
            async def measured(request: Any, context: Any) -> Any:
                started = time.perf_counter()
                started_count.inc()
                code = "OK"
                response: Any = None
                try:
                    result = behavior(request, context)
                    response = await result if inspect.isawaitable(result) else result
                    return response
                except grpc.aio.AbortError:
                    code = _code_name(context)
                    raise
                except BaseException:
                    code = "CANCELLED" if context.cancelled() else "UNKNOWN"
                    raise
                finally:
                    elapsed = time.perf_counter() - started
                    seconds.observe(elapsed)
                    handling.observe(elapsed)
                    if code == "OK":
                        ok_count.inc()
                        ok_handled.inc()
                    else:
                        counts.labels(method, code).inc()
                        handled.labels(*grpc_labels, code).inc()
                    if admin:
                        _audit(method, request, response, code, context, elapsed)

            return measured

        return wrap


def _audit(
    method: str, request: Any, response: Any, code: str, context: Any, elapsed: float
) -> None:
    action = method.rpartition("/")[2]
    resource = resource_of(request, response)
    try:
        caller = caller_key(context.invocation_metadata(), context.peer())
    except Exception:
        caller = ""
    log.info(
        "%s %s: %s by %s",
        action,
        resource or "-",
        code,
        caller or "-",
        extra={
            "action": action,
            "resource": resource,
            "code": code,
            "caller": caller,
            "duration_ms": round(elapsed * 1000, 3),
        },
    )
