"""What an interceptor stage of :class:`listener_core.pipeline.Pipeline` is.

Kept apart from the pipeline so that the error stage (``listener_core.interceptor``), which
the pipeline itself uses to refuse calls, can be one without an import cycle.
"""

from __future__ import annotations

import grpc


class Layer:
    """Wraps a method's handler, the same way for every call of that method."""

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return handler


class Gate:
    """Refuses a call from its metadata alone; the stages inside it never see the call."""

    def refusal(self, details: grpc.HandlerCallDetails) -> BaseException | None:
        return None
