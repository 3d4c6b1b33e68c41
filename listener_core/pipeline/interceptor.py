"""The servers' one gRPC interceptor: runs the pipeline's stages, each method's handler built once.

grpc.aio runs every ServerInterceptor on every call: one more await, and one more method
handler built, per interceptor and call. With five of them that was a fifth of a single
publish's cost (BENCHMARKS.md). Here each stage says once per method how it wraps that
method's handler (a :class:`Layer`), and the :class:`Pipeline` keeps the result; only a
:class:`Gate` (authentication) runs per call, since it decides from the call's metadata,
before the request is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc

from listener_core.pipeline.error_status import rejecting_handler
from listener_core.pipeline.stage import Gate, Layer


class Pipeline(grpc.aio.ServerInterceptor):
    """Runs ``stages`` (outermost first) as a single interceptor."""

    def __init__(self, stages: Sequence[Layer | Gate]) -> None:
        self.stages = list(stages)
        self._gates = [(i, s) for i, s in enumerate(self.stages) if isinstance(s, Gate)]
        self._built: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler, stages: Sequence[Layer | Gate]
    ) -> grpc.RpcMethodHandler:
        for stage in reversed(stages):
            if isinstance(stage, Layer):
                handler = stage.wrap_handler(method, handler)
        return handler

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        for index, gate in self._gates:
            refused = gate.refusal(handler_call_details)
            if refused is not None:  # only the stages outside the gate see the refusal
                return self._wrap(method, rejecting_handler(handler, refused), self.stages[:index])
        built = self._built.get(method)
        if built is None or built[0] is not handler:  # the service's handler is built once
            built = (handler, self._wrap(method, handler, self.stages))
            self._built[method] = built
        return built[1]
