"""Domain errors: why the service refuses a request, in its own terms, with no transport in them.

Each error has a `kind` (what sort of refusal), a stable `code` (a machine-readable name,
the seed API's "error" field) and a message that says what to do. The edges map kinds to
their protocol in one table each: `app.http.errors` (HTTP statuses, for the seed API and OIP
over HTTP) and `app.oip.grpc_server` (gRPC status codes). KServe's split, `kserve/errors.py` plus
its REST and gRPC handlers, is the model.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    INVALID = "invalid_input"  # the client's request is malformed; resending it won't help
    UNSUPPORTED = "unsupported_media"  # a form of request this server doesn't take
    TOO_LARGE = "too_large"  # within the protocol, but past a stated limit
    UNAUTHENTICATED = "unauthenticated"
    NOT_FOUND = "not_found"
    OVERLOADED = "overloaded"  # retry later (`retry_after`)
    DEADLINE = "deadline"
    NOT_READY = "not_ready"  # the model is starting; retry later
    INTERNAL = "internal"


class ServiceError(Exception):
    kind = Kind.INTERNAL

    def __init__(self, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after

    def within(self, where: str) -> ServiceError:
        """The same refusal, its message prefixed with where it happened ("image 2 of 3")."""
        self.message = f"{where}: {self.message}"
        return self


class InvalidInput(ServiceError):
    kind = Kind.INVALID


class UnsupportedMedia(ServiceError):
    kind = Kind.UNSUPPORTED


class TooLarge(ServiceError):
    kind = Kind.TOO_LARGE


class Unauthenticated(ServiceError):
    kind = Kind.UNAUTHENTICATED

    def __init__(self):
        super().__init__(
            "unauthorized",
            "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        )


class NotFound(ServiceError):
    kind = Kind.NOT_FOUND


class Overloaded(ServiceError):
    kind = Kind.OVERLOADED

    def __init__(self, retry_after: int = 1):
        super().__init__("overloaded", "the server is at capacity (MAX_QUEUE); retry shortly", retry_after)


class DeadlineExceeded(ServiceError):
    kind = Kind.DEADLINE

    def __init__(self, seconds: float):
        super().__init__("deadline_exceeded", f"no result within REQUEST_TIMEOUT_S={seconds:g} s")


class NotReady(ServiceError):
    kind = Kind.NOT_READY

    def __init__(self, retry_after: int = 5):
        super().__init__("not_ready", "the model is loading or warming up; retry shortly", retry_after)


def invalid(message: str, code: str = "invalid_request") -> InvalidInput:
    return InvalidInput(code, message)
