"""Domain errors of the servers, each bound to one gRPC status code.

Code anywhere in the servers raises these; one pipeline stage
(``listener_core.pipeline.error_status``) turns them into a ``google.rpc.Status`` with an
``ErrorInfo`` reason and, where fields are at fault, a ``BadRequest``. Nothing else maps
errors to status codes.

    ServiceError
    ├── InvalidArgument        INVALID_ARGUMENT    (field_violations for BadRequest)
    ├── Unauthenticated        UNAUTHENTICATED     (no bearer token, or one nobody was given)
    ├── PermissionDenied       PERMISSION_DENIED   (a known caller whose role may not call this)
    ├── NotFound               NOT_FOUND
    ├── AlreadyExists          ALREADY_EXISTS
    ├── FailedPrecondition     FAILED_PRECONDITION
    ├── Aborted                ABORTED             (etag mismatch, lost race)
    ├── ResourceExhausted      RESOURCE_EXHAUSTED  (size limits, per-caller concurrency)
    ├── Unavailable            UNAVAILABLE         (store or alert server unreachable)
    └── Internal               INTERNAL
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

DOMAIN = "listener.dolphinscheduler"


class ServiceError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        metadata: dict[str, str] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        """``retry_delay`` (seconds) goes to the client as a ``RetryInfo`` hint."""
        super().__init__(message)
        self.retry_delay = retry_delay
        self.message = message
        self.reason = reason or self.default_reason
        self.field_violations = list(field_violations)
        self.metadata = metadata or {}


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(ServiceError):
    """The caller did not prove who it is: no credentials, or ones the server does not know.

    The message never repeats what was presented, so a mistyped token is not echoed into
    client logs.
    """

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    """A known caller whose role does not allow the method (e.g. a viewer deleting a plugin)."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(ServiceError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Internal(ServiceError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"
