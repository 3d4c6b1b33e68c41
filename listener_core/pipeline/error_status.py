"""The one place where exceptions become gRPC statuses.

Other stages of the pipeline (authentication, limits, request checks) never build statuses
themselves: they raise domain errors inside the behaviour they wrap, which :class:`ErrorStatus`
maps,
or — when a call must be refused before any behaviour runs — hand back
:func:`rejecting_handler`, which aborts with the same rich status.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from sqlalchemy import exc as sa_exc

from listener_common import errors as sdk_errors
from listener_core import errors
from listener_core.pipeline.stage import Behavior, Layer
from listener_core.store_errors import is_conflict, store_unreachable

log = logging.getLogger(__name__)

_STATUS_DETAILS_KEY = "grpc-status-details-bin"

#: The retry hint (google.rpc.RetryInfo) sent with STORE_UNAVAILABLE, in seconds.
STORE_RETRY_DELAY = 1.0


#: A server's own refusals as service errors (None: not one of them). The API server's names
#: its resources (``api_server.refusals``); core knows no store and no resource name.
Refusals = Callable[[BaseException], "errors.ServiceError | None"]


def to_service_error(exc: BaseException, refusals: Refusals | None = None) -> errors.ServiceError:
    """Classifies any exception raised while serving a call."""
    if isinstance(exc, errors.ServiceError):
        return exc
    refused = refusals(exc) if refusals is not None else None
    if refused is not None:
        return refused
    if isinstance(exc, sdk_errors.ParamValidationError):
        return errors.InvalidArgument(
            str(exc),
            reason="INVALID_PARAMS",
            field_violations=[(f"params.{f}", d) for f, d in exc.violations],
        )
    if isinstance(exc, sdk_errors.ManifestError):
        return errors.InvalidArgument(str(exc), reason="INVALID_MANIFEST")
    if isinstance(exc, sdk_errors.PackageError):
        return errors.InvalidArgument(str(exc), reason="INVALID_PACKAGE")
    if isinstance(exc, sa_exc.DataError):
        # A value the request carried does not fit a column (PostgreSQL and MySQL enforce
        # VARCHAR lengths and integer ranges; SQLite does not): the caller's fault, not ours.
        return errors.InvalidArgument(
            f"a value does not fit the store: {_first_line(exc)}", reason="VALUE_OUT_OF_RANGE"
        )
    if is_conflict(exc):  # still conflicting after the retries, or a writer without them
        return errors.Aborted(
            f"a concurrent change got in the way; retry the call: {_first_line(exc)}",
            reason="STORE_CONFLICT",
        )
    if isinstance(exc, sa_exc.OperationalError) or store_unreachable(exc):
        return errors.Unavailable(
            f"the store is unavailable: {_first_line(exc)}",
            reason="STORE_UNAVAILABLE",
            retry_delay=STORE_RETRY_DELAY,
        )
    return errors.Internal(f"internal error: {type(exc).__name__}", reason="INTERNAL")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def to_status(err: errors.ServiceError) -> status_pb2.Status:
    status = status_pb2.Status(code=err.code.value[0], message=err.message)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=errors.DOMAIN)
    info.metadata.update(err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status.details.append(detail)
    if err.retry_delay is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(err.retry_delay * 1e9))
        detail = any_pb2.Any()
        detail.Pack(retry)
        status.details.append(detail)
    if err.field_violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in err.field_violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad)
        status.details.append(detail)
    assert status.code != code_pb2.OK
    return status


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    exc: BaseException,
    refusals: Refusals | None = None,
) -> None:
    err = to_service_error(exc, refusals)
    if isinstance(err, errors.Internal):
        log.exception("unexpected error", exc_info=exc)
    status = to_status(err)
    await context.abort(
        err.code,
        err.message,
        trailing_metadata=((_STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


class _Malformed:
    """Stands for a request whose bytes did not parse, so the call fails as INVALID_ARGUMENT.

    grpcio answers a deserializer's exception with INTERNAL ("Exception deserializing
    request!"), which would blame the server for a client's garbage.
    """

    __slots__ = ("error",)

    def __init__(self, error: str | errors.InvalidArgument) -> None:
        self.error = error


def malformed(error: errors.InvalidArgument) -> Any:
    """A request stand-in that fails as ``error`` inside the error stage.

    For another front door (HTTP/JSON) whose request did not parse: handed to a method's
    handler instead of a message, it is refused, counted and audited like a gRPC request
    whose bytes did not parse.
    """
    return _Malformed(error)


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Malformed(type(exc).__name__)

    return parse


def _malformed(marker: _Malformed) -> errors.InvalidArgument:
    if isinstance(marker.error, errors.InvalidArgument):
        return marker.error
    return errors.InvalidArgument(
        f"the request is not a valid message of this method ({marker.error})",
        reason="MALFORMED_REQUEST",
    )


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Malformed):
            raise _malformed(request)
        yield request


def _wrap(
    behavior: Behavior, refusals: Refusals | None, *, streaming_request: bool = False
) -> Behavior:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            if streaming_request:
                request = _checked_stream(request)
            elif isinstance(request, _Malformed):
                raise _malformed(request)
            result = behavior(request, context)
            # Our servicers are async; the stock health servicer answers synchronously.
            return await result if inspect.isawaitable(result) else result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc, refusals)

    return wrapped


class ErrorStatus(Layer):
    """Maps domain errors (and store outages) of unary-response methods to statuses;
    ``refusals`` names the server's own (its store's) errors."""

    def __init__(self, refusals: Refusals | None = None) -> None:
        self.refusals = refusals

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.response_streaming:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap(handler.unary_unary, self.refusals),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap(handler.stream_unary, self.refusals, streaming_request=True),
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler


def rejecting_handler(handler: grpc.RpcMethodHandler, exc: BaseException) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s shape that answers every call with ``exc``'s status.

    For stages that decide from the call's metadata alone (authentication), before any
    request is read — and the request is never read: a refused caller cannot make the server
    hold its message. The status is built here, like every other one.
    """

    async def reject(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort(context, exc)

    async def reject_streaming(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await abort(context, exc)
        yield None  # never reached: makes this an async generator, as the shape requires

    kwargs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    # Request-streaming shapes even for unary methods: grpcio reads (and buffers) a unary
    # request whole before calling the behaviour, a streaming one only when it is iterated,
    # which a refusal never does. The wire format is the same, so the client cannot tell.
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(reject_streaming, **kwargs)
    return grpc.stream_unary_rpc_method_handler(reject, **kwargs)
