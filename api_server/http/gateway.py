"""HTTP/JSON for every public RPC, the OpenAPI document and the web console, on ``http_addr``.

How a call reaches a servicer: the gateway does not call servicers itself, nor open a gRPC
channel to its own port. It runs each HTTP call through the API server's own interceptor
:class:`~listener_core.pipeline.Pipeline` (the very object the gRPC server uses) with the very
method handlers registered on the gRPC server, passing a :class:`HttpCallContext` where gRPC
passes its servicer context. So authentication and roles, request validation, the per-caller
publish limit (its in-flight counts are shared with gRPC), error mapping, metrics and the
audit line are the same code with the same state, and the caller they see is the real HTTP
client: its ``Authorization`` header and its socket address, never a header it could forge.
A loopback channel would have cost a second encode, decode and hop per call, and made every
HTTP caller look like 127.0.0.1 unless the address came in a header anyone could send.

Beside it: ``call_context.py`` (what stands for gRPC's servicer context and call details),
``answers.py`` (error statuses as JSON, refusals, the headers every response gets),
``routes.py`` and ``transcode.py`` (the protos' HTTP rules, JSON to messages and back).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.message import Message

from api_server.http import answers, transcode
from api_server.http import routes as routing
from api_server.http.call_context import (
    CallDetails,
    HttpCallContext,
    call_metadata,
    no_requests,
    peer_of,
)
from listener_core import errors
from listener_core.pipeline import Pipeline
from listener_core.pipeline.error_status import malformed

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parents[1] / "console" / "static"
OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"
#: Bytes of a raw upload handed to the servicer per message, as listenerctl streams them.
CHUNK_BYTES = 256 << 10


class Gateway:
    """Transcodes HTTP/JSON calls to the public API's methods (see the module docstring)."""

    def __init__(
        self,
        pipeline: Pipeline,
        handlers: Mapping[str, grpc.RpcMethodHandler],
        *,
        max_body_bytes: int,
        max_package_bytes: int,
        static_dir: Path = STATIC_DIR,
        api_routes: Sequence[routing.Route] | None = None,
        loopback_names_only: bool = False,
        tracing: grpc.aio.ServerInterceptor | None = None,
    ) -> None:
        """``tracing``: the interceptor the gRPC server runs around ``pipeline`` when traces
        are on (``listener_core.tracing``); HTTP calls go through it too, with the caller's
        ``traceparent`` header as their metadata."""
        self.pipeline = pipeline
        self.tracing = tracing
        self.loopback_names_only = loopback_names_only
        self.handlers = dict(handlers)
        self.max_body = max_body_bytes
        self.max_package = max_package_bytes
        self.static_dir = static_dir
        self.routes = list(api_routes if api_routes is not None else routing.routes())
        missing = [r.grpc_method for r in self.routes if r.grpc_method not in self.handlers]
        if missing:
            raise ValueError(f"annotated methods without a servicer: {missing}")

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.on_response_prepare.append(answers.secure)
        # [\s\S]: "." would leave a path holding a newline to the router's bare 404.
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refused = self._browser_refusal(request)
        if refused is not None:
            return answers.error_response(refused)
        path = request.path
        if path.startswith("/v1/") or path == "/v1":
            return await self._api(request)
        if path == "/openapi.json":
            if request.method not in ("GET", "HEAD"):
                return answers.not_allowed(["GET", "HEAD"])
            return web.FileResponse(OPENAPI_FILE, headers={"Content-Type": "application/json"})
        return await self._static(request)

    def _browser_refusal(self, request: web.Request) -> errors.ServiceError | None:
        """Keeps other web sites' pages out, for the server that has no tokens to do it.

        A page on any site can make the browser send a POST without a preflight (no
        Content-Type, or a form's): a changing call that says it comes from another origin
        (``Origin``, ``Sec-Fetch-Site``) is refused. And a site whose name is made to resolve
        to 127.0.0.1 (DNS rebinding) would be same-origin: an open server on loopback answers
        only requests addressed to a loopback name. curl and other clients send neither
        header, and the console is same-origin, so neither notices.
        """
        if self.loopback_names_only and not answers.loopback_name(request.host):
            return errors.PermissionDenied(
                "this server has no tokens and answers only requests addressed to a loopback "
                "name (localhost, 127.0.0.1, [::1])",
                reason="HOST_NOT_ALLOWED",
            )
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = request.headers.get("Origin")
        # By host name and port, not scheme: behind a proxy that ends TLS the page is https
        # while this server sees http; a foreign page cannot have this server's host name.
        foreign = origin is not None and urlsplit(origin).netloc.lower() != request.host.lower()
        site = request.headers.get("Sec-Fetch-Site", "same-origin").lower()
        if foreign or site not in ("same-origin", "none"):
            return errors.PermissionDenied(
                "a changing call from another web site's page is refused",
                reason="CROSS_ORIGIN",
            )
        return None

    # -- the API ------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        matched: list[tuple[routing.Route, dict[tuple[str, ...], str]]] = []
        for route in self.routes:
            found = route.template.match(raw_path)
            if found is not None:
                matched.append((route, found))
        if not matched:
            return answers.error_response(
                errors.NotFound(
                    f"no API method at {request.method} {request.path}", reason="NO_ROUTE"
                )
            )
        for route, variables in matched:
            if route.http_method == request.method:
                return await self._call(request, route, variables)
        return answers.not_allowed(sorted({r.http_method for r, _ in matched}))

    async def _call(
        self, request: web.Request, route: routing.Route, variables: dict[tuple[str, ...], str]
    ) -> web.StreamResponse:
        limit = self.max_package if route.raw_body else self.max_body
        length = request.content_length
        if length is not None and length > limit:
            return answers.too_large(limit)
        refusal = answers.content_type_refusal(request, route)
        if refusal is not None and not await answers.curl_json(request, route):
            return refusal
        metadata = call_metadata(request, traced=self.tracing is not None)
        context = HttpCallContext(metadata, peer_of(request))
        details = CallDetails(route.grpc_method, metadata)
        raw = self.handlers[route.grpc_method]

        async def continuation(_: Any) -> grpc.RpcMethodHandler:
            return raw

        if self.tracing is None:
            handler = await self.pipeline.intercept_service(continuation, details)  # type: ignore[arg-type]
        else:
            handler = await self.tracing.intercept_service(
                partial(self.pipeline.intercept_service, continuation),  # type: ignore[arg-type]
                details,  # type: ignore[arg-type]
            )
        try:
            if route.client_streaming:
                response = await handler.stream_unary(
                    self._stream(request, route, variables), context
                )
            elif handler.unary_unary is None:
                # A refusal (listener_core.pipeline.error_status.rejecting_handler) has a streaming
                # shape so that it never reads the request: the body stays unread here too.
                response = await handler.stream_unary(no_requests(), context)
            else:
                try:
                    message: Any = await self._request(request, route, variables)
                except web.HTTPRequestEntityTooLarge:
                    return answers.too_large(limit)
                except errors.InvalidArgument as exc:
                    message = malformed(exc)
                response = await handler.unary_unary(message, context)
        except grpc.aio.AbortError:
            return answers.status_response(context.status())
        except web.HTTPRequestEntityTooLarge:
            return answers.too_large(limit)
        except Exception:  # the error stage maps everything; this is a bug's safety net
            log.exception("HTTP call %s failed", route.grpc_method)
            return answers.error_response(errors.Internal("internal error", reason="INTERNAL"))
        return web.json_response(transcode.to_json(response))

    def _new(self, route: routing.Route) -> Message:
        cls: type[Message] = message_factory.GetMessageClass(route.input)
        return cls()

    async def _request(
        self, request: web.Request, route: routing.Route, variables: dict[tuple[str, ...], str]
    ) -> Message:
        """The request message of a unary method: body, then query, then path variables."""
        body = await request.read()
        message = self._new(route)
        cls = type(message)
        if route.body == "*":
            if request.query:
                names = ", ".join(sorted(set(request.query)))
                raise transcode.bad_request(
                    f"this method takes its fields in the body, not as query parameters ({names})",
                    reason="UNKNOWN_FIELD",
                )
            message = transcode.to_message(route.input, cls, transcode.parse_json(body), "the body")
        else:
            data = transcode.query_to_dict(
                route.input, request.query.items(), route.path_fields | _body_paths(route)
            )
            field = route.body_field
            if field is not None:
                data[field.json_name] = transcode.parse_json(body)
                if not isinstance(data[field.json_name], dict) and field.message_type:
                    raise transcode.bad_request(
                        "the body must be a JSON object", field.name, reason="MALFORMED_JSON"
                    )
            elif body.strip():
                raise transcode.bad_request(
                    f"{route.http_method} {route.template.text} takes no body",
                    reason="UNEXPECTED_BODY",
                )
            message = transcode.to_message(route.input, cls, data, "the request")
        for path, value in variables.items():
            transcode.set_path(message, path, value)
        return message

    async def _stream(
        self, request: web.Request, route: routing.Route, variables: dict[tuple[str, ...], str]
    ) -> AsyncIterator[Any]:
        """A raw body as request messages of ``CHUNK_BYTES`` each; the query's and path's
        fields ride on the first."""
        field = route.body_field
        assert field is not None
        try:
            first = transcode.to_message(
                route.input,
                type(self._new(route)),
                transcode.query_to_dict(
                    route.input, request.query.items(), route.path_fields | {(field.name,)}
                ),
                "the request",
            )
        except errors.InvalidArgument as exc:
            yield malformed(exc)
            return
        for path, value in variables.items():
            transcode.set_path(first, path, value)
        message = first
        sent = False
        while True:
            chunk = await request.content.read(CHUNK_BYTES)
            if not chunk:
                break
            setattr(message, field.name, chunk)
            yield message
            sent = True
            message = self._new(route)
        if not sent:
            yield message

    # -- the console ----------------------------------------------------------------------------

    async def _static(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return answers.not_allowed(["GET", "HEAD"])
        relative = request.path.lstrip("/") or "index.html"
        root = self.static_dir.resolve()
        target = (root / relative).resolve()
        hidden = any(part.startswith(".") for part in Path(relative).parts)
        if hidden or not target.is_relative_to(root) or not target.is_file():
            return web.Response(status=404, text="not found\n", content_type="text/plain")
        headers = {"Cache-Control": "no-cache"}
        return web.FileResponse(target, headers=headers)


def _body_paths(route: routing.Route) -> set[tuple[str, ...]]:
    field = route.body_field
    return {(field.name,)} if field is not None else set()


# -- serving ------------------------------------------------------------------------------------


def parse_addr(addr: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port``; None for ``off`` (or empty)."""
    text = addr.strip()
    if text.lower() in ("", "off"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"http_addr {addr!r}: expected host:port or off")
    return host.strip("[]") or "0.0.0.0", int(port)


def ssl_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext | None:
    """HTTPS with the API's own certificate when it has one (mTLS with its client CA)."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass
class HttpEndpoint:
    runner: web.AppRunner
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    async def close(self) -> None:
        await self.runner.cleanup()


async def serve(
    gateway: Gateway, host: str, port: int, tls: ssl.SSLContext | None = None
) -> HttpEndpoint:
    """Listens in the running loop; raises OSError if the address is taken."""
    runner = web.AppRunner(gateway.application(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_port=False)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(
            f"cannot listen on {host}:{port} for HTTP/JSON ({why}): set http_addr "
            "(LISTENER_HTTP_ADDR) to a free address, or to off"
        ) from None
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return HttpEndpoint(runner, host, int(bound[1]), tls is not None)
