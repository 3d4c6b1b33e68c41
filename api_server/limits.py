"""Per-caller concurrency limits on publishing, so one producer cannot starve the others.

Publishing holds a store transaction (and, on some stores, the sequence counter's lock) until
commit, so a producer that fires thousands of concurrent publishes would queue everyone else
behind it. Each caller — its token, or its peer host when the API is open — may have at most
``publish_concurrency_per_caller`` publishes in flight; one more is refused at once with
RESOURCE_EXHAUSTED (retryable with backoff) instead of queueing, so a flood costs its sender,
not the server's memory.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any

import grpc

from listener_core import errors
from listener_core.auth import caller_key
from listener_core.pipeline.stage import Behavior, Layer, wrap_unary_response

PUBLISH_METHODS = frozenset(
    {"/listener.v1.EventService/PublishEvent", "/listener.v1.EventService/PublishEvents"}
)


class PublishLimiter(Layer):
    def __init__(self, limit: int, methods: Collection[str] = PUBLISH_METHODS) -> None:
        self.limit = limit
        self.methods = frozenset(methods)
        self._in_flight: dict[str, int] = {}

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def _guard(self, behavior: Behavior) -> Behavior:
        async def limited(request: Any, context: Any) -> Any:
            key = caller_key(context.invocation_metadata(), context.peer() or "")
            if self._in_flight.get(key, 0) >= self.limit:
                raise errors.ResourceExhausted(
                    f"this caller already has {self.limit} publishes in flight; "
                    "retry when one completes",
                    reason="PUBLISH_CONCURRENCY",
                    metadata={"limit": str(self.limit)},
                )
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            try:
                result = behavior(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]

        return limited

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if self.limit <= 0 or method not in self.methods:
            return handler
        return wrap_unary_response(handler, self._guard)
