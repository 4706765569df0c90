"""Errors the domain raises on purpose; REST turns them into the JSON error shape and
Socket.IO handlers into ``{"ok": false, "error": {...}}`` acks."""

from __future__ import annotations

from typing import Any


class HubError(Exception):
    """An error the client should see, with an HTTP status and a stable machine code."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details
        self.headers = headers or {}

    def as_ack(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"ok": False, "error": error}


class InvalidInput(HubError):
    status, code = 400, "validation_error"


class Forbidden(HubError):
    status, code = 403, "forbidden"


class NotFound(HubError):
    status, code = 404, "not_found"


class TooLarge(HubError):
    status, code = 413, "payload_too_large"


class RateLimited(HubError):
    status, code = 429, "rate_limited"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(
            f"too many requests; retry in {seconds} s",
            details={"retry_after": seconds},
            headers={"Retry-After": str(seconds)},
        )


class Unavailable(HubError):
    """A dependency (Redis, the database) does not answer; the client may retry."""

    status, code = 503, "unavailable"


class DatabaseUnavailable(Unavailable):
    """The database does not answer (down, restarting, unreachable): retry after a pause."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(
            f"the database is unavailable; retry in {retry_after} s",
            details={"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
