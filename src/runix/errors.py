"""The errors services raise; the API turns each into `{"error", "code"}` with its status."""

from __future__ import annotations

from typing import Any


class RunixError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details is not None:
            out["details"] = self.details
        return out


class BadRequest(RunixError):
    status, code = 400, "BAD_REQUEST"


class ValidationFailed(RunixError):
    status, code = 400, "VALIDATION_ERROR"


class Unauthorized(RunixError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(RunixError):
    status, code = 403, "FORBIDDEN"


class PaymentRequired(Forbidden):
    """A plan above the current one, asked for without paying (403: the spec's table has no 402)."""
    code = "PAYMENT_REQUIRED"


class QuotaExceeded(Forbidden):
    """The account's plan has no room left for this (disk, for one)."""
    code = "QUOTA_EXCEEDED"


class NotFound(RunixError):
    status, code = 404, "NOT_FOUND"


class Conflict(RunixError):
    status, code = 409, "CONFLICT"


class RateLimited(RunixError):
    status, code = 429, "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str] | None = None):
        super().__init__(message, headers={**(headers or {}), "Retry-After": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)
