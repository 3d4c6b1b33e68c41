"""Request checks: update masks for the services, and limits every request must meet.

:class:`RequestValidator` checks each request of the public API before any service sees it,
by walking the message's descriptor: services then need only the checks that depend on their
meaning (ids, params against the plugin's form, payload rules), and a field added to a proto is
covered by the generic limits at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from api_server.validation_fast import fast as _fast
from api_server.validation_plan import (
    EVENT_TYPE,
    MAX_PARAM_KEY,
    MAX_PARAM_VALUE,
    MAX_PARAMS,
    MAX_SECONDS,
    MIN_SECONDS,
    TIMESTAMP,
    Step,
    plan_for,
)
from listener_core import errors
from listener_core.pipeline.stage import Behavior, Layer, wrap_unary_response


def mask_paths(paths: Iterable[str], allowed: set[str], populated: set[str]) -> set[str]:
    """The fields an update changes, as AIP-134 says: those named in the update_mask; with
    no mask, those the request populates (non-empty), so a partial update from a client that
    sends no mask never resets the others; ``*`` alone for all of them (full replacement).
    Unknown paths are the caller's error."""
    given = set(paths)
    if given == {"*"}:
        return set(allowed)
    chosen = given or (populated & allowed)
    unknown = chosen - allowed
    if unknown:
        raise errors.InvalidArgument(
            f"update_mask paths {sorted(unknown)} cannot be updated; allowed: {sorted(allowed)}",
            field_violations=[("update_mask", f"unknown path {p}") for p in sorted(unknown)],
        )
    return chosen


# -- every request, checked once before it reaches a service ----------------------------------

_MAX_REPORTED = 20


@dataclass(frozen=True)
class Violation:
    field: str
    description: str
    reason: str = "INVALID_ARGUMENT"


def _timestamp(message: Message, path: str, out: list[Violation]) -> None:
    seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
    if not MIN_SECONDS <= seconds <= MAX_SECONDS or not 0 <= nanos <= 999_999_999:
        out.append(
            Violation(path, "is not a valid timestamp (years 1 to 9999, nanos 0 to 999999999)")
        )


def _params_map(values: Mapping[str, str], path: str, out: list[Violation]) -> None:
    if len(values) > MAX_PARAMS:
        out.append(Violation(path, f"has more than {MAX_PARAMS} entries"))
        return
    for key, value in values.items():
        if len(key) > MAX_PARAM_KEY:
            out.append(Violation(path, f"a key is longer than {MAX_PARAM_KEY} characters"))
        elif len(value) > MAX_PARAM_VALUE:
            out.append(Violation(f"{path}.{key}", f"is longer than {MAX_PARAM_VALUE} characters"))


def _check(step: Step, value: Any, path: str, out: list[Violation]) -> None:
    if step.kind == "message":
        _walk(value, path, step.in_event, out)
    elif step.kind == "timestamp":
        _timestamp(value, path, out)
    elif step.kind == "enum":
        if value not in step.enum_values:
            if step.enum_name == EVENT_TYPE:
                out.append(Violation(path, f"unknown event type {value}", "UNKNOWN_EVENT_TYPE"))
            else:
                short = step.enum_name.rsplit(".", 1)[-1]
                out.append(Violation(path, f"unknown {short} value {value}"))
    elif step.kind == "string" and len(value) > step.max_chars:
        out.append(Violation(path, f"is longer than {step.max_chars} characters"))


def _walk(message: Message, path: str, in_event: bool, out: list[Violation]) -> None:
    prefix = f"{path}." if path else ""
    plan = plan_for(message.DESCRIPTOR, in_event)
    for oneof, members in plan.oneofs.items():
        which = message.WhichOneof(oneof)
        if which is not None and which in members:
            _check(members[which], getattr(message, which), prefix + which, out)
    for step in plan.steps:
        kind = step.kind
        if kind == "map":
            _params_map(getattr(message, step.name), prefix + step.name, out)
        elif step.repeated:
            values = getattr(message, step.name)
            if step.max_items is not None and len(values) > step.max_items:
                out.append(Violation(prefix + step.name, f"has more than {step.max_items} entries"))
            elif kind != "count":
                for index, item in enumerate(values):
                    _check(step, item, f"{prefix}{step.name}[{index}]", out)
        elif kind in ("message", "timestamp"):
            if message.HasField(step.name):
                _check(step, getattr(message, step.name), prefix + step.name, out)
        else:
            value = getattr(message, step.name)
            if value:  # "" and 0 never break a rule
                _check(step, value, prefix + step.name, out)


def request_violations(message: Message) -> list[Violation]:
    """What is wrong with a request's fields, whatever the method: lengths, counts, enum values
    the proto does not define (proto3 lets any number through), timestamps out of range."""
    out: list[Violation] = []
    if message.DESCRIPTOR.full_name == TIMESTAMP:
        _timestamp(message, "", out)
    elif not _fast(message.DESCRIPTOR, False)(message):
        _walk(message, "", False, out)
    return out


def check_request(message: Message) -> None:
    """Raises InvalidArgument with a BadRequest violation per field at fault."""
    found = request_violations(message)
    if not found:
        return
    shown = "; ".join(f"{v.field} {v.description}" for v in found[:5])
    more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
    raise errors.InvalidArgument(
        f"invalid request: {shown}{more}",
        reason=found[0].reason,
        field_violations=[(v.field, v.description) for v in found[:_MAX_REPORTED]],
    )


async def _checked_stream(requests: AsyncIterator[Message]) -> AsyncIterator[Message]:
    async for request in requests:
        check_request(request)
        yield request


def _checking(streaming_request: bool) -> Callable[[Behavior], Behavior]:
    def wrapper(behavior: Behavior) -> Behavior:
        async def checked(request: Any, context: Any) -> Any:
            if streaming_request:
                request = _checked_stream(request)
            else:
                check_request(request)
            return await behavior(request, context)

        return checked

    return wrapper


class RequestValidator(Layer):
    """Runs :func:`check_request` on every request of the public services (each message of a
    client stream too), so no service can forget a limit a column or a log line depends on."""

    def __init__(self, package_prefix: str = "/listener.v1.") -> None:
        self.prefix = package_prefix

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if not method.startswith(self.prefix):
            return handler
        return wrap_unary_response(handler, _checking(handler.request_streaming))
