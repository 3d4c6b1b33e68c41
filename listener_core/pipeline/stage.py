"""What a stage of the pipeline is (:class:`Layer` or :class:`Gate`), and a helper to write one.

Kept apart from the pipeline's interceptor so that the error stage
(``listener_core.pipeline.error_status``), which the interceptor itself uses to refuse calls,
can be one without an import cycle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

#: A method's behaviour: what a servicer method is, and what a stage wraps.
Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class Layer:
    """Wraps a method's handler, the same way for every call of that method."""

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return handler


class Gate:
    """Refuses a call from its metadata alone; the stages inside it never see the call."""

    def refusal(self, details: grpc.HandlerCallDetails) -> BaseException | None:
        return None


def wrap_unary_response(
    handler: grpc.RpcMethodHandler, wrapper: Callable[[Behavior], Behavior]
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour passed through ``wrapper`` (unary-response shapes only).

    What the wrapper raises reaches :class:`~listener_core.pipeline.error_status.ErrorStatus`,
    which must come before (outside) the stage using this in the pipeline. Response-streaming
    handlers are returned unchanged.
    """
    kwargs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrapper(handler.unary_unary), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrapper(handler.stream_unary), **kwargs)
    return handler
