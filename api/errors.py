"""The CONTRACT error shape ``{"error": {"code", "message", "details"}}`` and its middleware."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pydantic
from aiohttp import web

from hub.errors import HubError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(HubError):
    """An error raised by a view itself (as opposed to one from a service)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, details=details, headers=headers)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON reply encoded with orjson (datetimes as ISO 8601)."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return json_response(body, status=status, headers=headers)


def validation_details(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input (it may be large or secret)."""
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as the JSON error shape: no HTML pages, no tracebacks."""
    try:
        return await handler(request)
    except HubError as exc:
        return error_response(
            exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
        )
    except pydantic.ValidationError as exc:
        return error_response(
            400, "validation_error", "request is not valid", details=validation_details(exc)
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return error_response(
            exc.status,
            _CODES_BY_STATUS.get(exc.status, "http_error"),
            exc.reason,
            headers=headers,
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")
