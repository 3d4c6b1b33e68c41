"""Domain errors of the servers, each bound to one gRPC status code.

Code anywhere in the servers raises these; one interceptor (``listener_core.interceptor``)
turns them into a ``google.rpc.Status`` with an ``ErrorInfo`` reason and, where fields are at
fault, a ``BadRequest``. Nothing else maps errors to status codes.

    ServiceError
    ├── InvalidArgument        INVALID_ARGUMENT    (field_violations for BadRequest)
    ├── NotFound               NOT_FOUND
    ├── AlreadyExists          ALREADY_EXISTS
    ├── FailedPrecondition     FAILED_PRECONDITION
    ├── Aborted                ABORTED             (etag mismatch, lost race)
    ├── ResourceExhausted      RESOURCE_EXHAUSTED  (size limits)
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
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field_violations = list(field_violations)
        self.metadata = metadata or {}


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


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
