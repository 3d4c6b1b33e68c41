"""What the gateway hands the pipeline and the servicers in place of gRPC's: a servicer
context (:class:`HttpCallContext`), a call's details, the handlers as gRPC has them
registered (:class:`HandlerTable`), and the caller's address in gRPC's peer form."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn

import grpc
from aiohttp import web
from google.rpc import status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


async def no_requests() -> AsyncIterator[Any]:
    """The request stream a refusal gets: it never reads one."""
    return
    yield


class Metadatum(NamedTuple):
    """One metadata entry as grpc.aio gives it: a pair that also has ``key`` and ``value``
    (OpenTelemetry's gRPC instrumentation reads them so)."""

    key: str
    value: str


#: The W3C trace context headers an HTTP caller may send, passed on as gRPC metadata.
TRACE_HEADERS = ("traceparent", "tracestate")


def call_metadata(request: web.Request, traced: bool) -> tuple[Metadatum, ...]:
    """The metadata of an HTTP call: its bearer token(s), and with ``traced`` its trace
    context headers."""
    names = ("authorization", *TRACE_HEADERS) if traced else ("authorization",)
    return tuple(Metadatum(name, v) for name in names for v in request.headers.getall(name, []))


class CallDetails(NamedTuple):
    """What a gate reads of a call (``grpc.HandlerCallDetails``' two fields)."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class HttpCallContext:
    """Stands for ``grpc.aio.ServicerContext`` in the methods the stages and servicers use:
    metadata, peer, abort and the final code."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer
        self._code: grpc.StatusCode | None = None
        self.details = ""
        self.trailing_metadata: Sequence[tuple[str, Any]] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def cancelled(self) -> bool:
        return False

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def time_remaining(self) -> float | None:
        return None

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, Any]] = (),
    ) -> NoReturn:
        self._code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)
        raise grpc.aio.AbortError()

    def status(self) -> status_pb2.Status:
        """The status the call was aborted with, details included."""
        for key, value in self.trailing_metadata:
            if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
                return status_pb2.Status.FromString(value)
        code = self._code or grpc.StatusCode.UNKNOWN
        return status_pb2.Status(code=code.value[0], message=self.details)


class HandlerTable:
    """Passes servicer registrations on to the gRPC server and keeps the handlers, so the
    gateway calls the very handler objects gRPC calls (and the pipeline builds each once)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self.server.add_registered_method_handlers(service, handlers)
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


def peer_of(request: web.Request) -> str:
    """The client's address in gRPC's peer form (``ipv4:1.2.3.4:5678``)."""
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = str(peername[0]), peername[1]
        return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
    return "unix:" + str(peername or "")
