"""Domain errors carry the canonical status they map to; one interceptor turns them into
gRPC statuses. Domain modules import this file, never grpc."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


class Code(Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    ABORTED = "ABORTED"


class DomainError(Exception):
    """A refusal the caller can act on. `reason` is a stable UPPER_SNAKE identifier that
    callers branch on (it travels as google.rpc.ErrorInfo, meshkit.status); `metadata`
    goes with it, facts a caller may act on (never secrets); the message is for people."""

    code: Code = Code.FAILED_PRECONDITION

    def __init__(self, message: str, *, reason: str = "", code: Code | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or type(self).__name__
        self.metadata: dict[str, str] = dict(metadata or {})
        if code is not None:
            self.code = code


class InvalidArgument(DomainError):
    code = Code.INVALID_ARGUMENT


class FailedPrecondition(DomainError):
    code = Code.FAILED_PRECONDITION


class NotFound(DomainError):
    code = Code.NOT_FOUND


class Conflict(DomainError):
    """The idempotency key was used before with different content."""

    code = Code.ALREADY_EXISTS


class PermissionDenied(DomainError):
    code = Code.PERMISSION_DENIED


class Exhausted(DomainError):
    code = Code.RESOURCE_EXHAUSTED


class RateLimited(Exhausted):
    """Too many calls of one kind for one user; `retry_after_ms` says when the window ends
    (sent as `retry-after-ms` trailing metadata, like admission's refusals)."""

    def __init__(self, message: str, *, retry_after_ms: int, reason: str = "USER_RATE_LIMITED") -> None:
        super().__init__(message, reason=reason, metadata={"retry_after_ms": str(retry_after_ms)})
        self.retry_after_ms = retry_after_ms


class Unavailable(DomainError):
    """A dependency did not answer; retrying the same request is safe."""

    code = Code.UNAVAILABLE
