"""The one exception the client raises, decoded from the server's rich status."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class ListenerClientError(Exception):
    """A failed call: the gRPC code, the server's message, its ``ErrorInfo`` reason (e.g.
    ``PLUGIN_IN_USE``) and ``BadRequest`` field violations as ``(field, description)``.

    ``reason`` is empty when the server sent no details, as for a connection failure.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        field_violations: Sequence[tuple[str, str]] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.field_violations = list(field_violations)
        self.metadata = metadata or {}

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason and self.reason != self.code.name:
            text += f" [{self.reason}]"
        for field, description in self.field_violations:
            text += f"\n  {field}: {description}"
        return text

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> ListenerClientError:
        """Reads ``grpc-status-details-bin`` (a ``google.rpc.Status``) when the server sent
        one; otherwise keeps the plain code and details."""
        code: grpc.StatusCode = exc.code()
        message: str = exc.details() or code.name
        reason = ""
        violations: list[tuple[str, str]] = []
        metadata: dict[str, str] = {}
        for key, value in exc.trailing_metadata() or ():
            if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
                continue
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # a malformed trailer still leaves a usable error
                break
            message = status.message or message
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(info):
                    reason = info.reason
                    metadata = dict(info.metadata)
                elif detail.Unpack(bad):
                    violations.extend((v.field, v.description) for v in bad.field_violations)
        return cls(code, message, reason, violations, metadata)


class BufferFullError(ListenerClientError):
    """A publisher's buffer stayed full: at once with ``when_full="fail"``, or after
    ``block_timeout`` with ``"block"``. The event was not taken; the caller decides (drop it,
    spill it, or try again later)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason="BUFFER_FULL")


class PublisherClosedError(ListenerClientError):
    """The publisher is closed: a publish after ``close()``, or an event still unacknowledged
    when ``close(timeout)`` gave up waiting (it may or may not have been stored)."""

    def __init__(self, message: str) -> None:
        super().__init__(grpc.StatusCode.CANCELLED, message, reason="PUBLISHER_CLOSED")
