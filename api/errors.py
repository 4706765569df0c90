"""The error shape ``{"error": {"code", "message", "details"}}`` and its middleware."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pydantic
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError

from db.outage import is_unavailable
from hub.errors import DatabaseUnavailable, HubError
from hub.keys import SETTINGS
from hub.logs import request_id_var
from hub.sockets.transport import is_websocket_upgrade

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SOCKETIO_PREFIX = "/socket.io/"

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
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


async def answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` and hang up at once, for a body we will not read to its end.

    Returning normally would make aiohttp "linger", reading and discarding the rest of the
    body first: for a body that arrives a byte at a time or cannot be decoded, that holds
    the connection on or logs a traceback of its own.
    """
    response.force_close()
    # Prepared here, so the request id middleware cannot add its header afterwards.
    response.headers.setdefault("X-Request-ID", request_id_var.get())
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _malformed_body(request: web.Request, cause: BaseException | None) -> web.Response:
    if isinstance(cause, ContentEncodingError):
        encoding = request.headers.get("Content-Encoding", "")
        return error_response(
            400,
            "invalid_content_encoding",
            f"request body is not valid {encoding} data although Content-Encoding says so",
        )
    reason = cause.message if isinstance(cause, HttpProcessingError) else "malformed body"
    return error_response(400, "bad_request", f"request body could not be read: {reason}")


def validation_details(exc: pydantic.ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without the echoed input (it may be large or secret)."""
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


class ClientProtocolErrorFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a bad request line, header or length) at
    ERROR with a traceback, though the client is at fault and got its 400: keep one INFO
    line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            message = record.getMessage()
            record.msg = "%s (%s)"
            record.args = (message, " ".join(str(exc.message).split())[:200])
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_protocol_errors() -> None:
    """Install :class:`ClientProtocolErrorFilter` on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientProtocolErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientProtocolErrorFilter())


@web.middleware
def error_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Every failure leaves as the JSON error shape: no HTML pages, no tracebacks.

    A Socket.IO WebSocket handshake goes straight to engine.io, which answers its own errors
    (and once upgraded, no error page could be sent): no frame of this middleware stays on the
    stack for the socket's life."""
    if request.path.startswith(SOCKETIO_PREFIX) and is_websocket_upgrade(request):
        return handler(request)
    return _json_errors(request, handler)


async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HubError as exc:
        return hub_error_response(exc)
    except pydantic.ValidationError as exc:
        return error_response(
            400, "validation_error", "request is not valid", details=validation_details(exc)
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status >= 500:
            # Raised by a library rather than by us (a template that went missing under a
            # running server, say): a 500 must always leave a trace in the log.
            log.error(
                "%s %s answered %d: %s",
                request.method,
                request.path,
                exc.status,
                exc.reason,
                exc_info=exc,
            )
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return error_response(
            exc.status,
            _CODES_BY_STATUS.get(exc.status, "http_error"),
            exc.reason,
            headers=headers,
        )
    except Exception as exc:
        return await _unexpected_error_response(request, exc)


def hub_error_response(exc: HubError) -> web.Response:
    return error_response(
        exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
    )


async def _unexpected_error_response(request: web.Request, exc: Exception) -> web.Response:
    """Failures no view raised on purpose: the client's, a dependency's, or a bug."""
    if isinstance(exc, web.RequestPayloadError):
        # The body could not be decoded as sent (a plain body labelled gzip, broken
        # chunking): the client's mistake, found while a view or middleware reads it.
        return await answer_and_close(request, _malformed_body(request, exc.__cause__))
    if isinstance(exc, ConnectionResetError) and _client_gone(request):
        # The client went away mid-request (often mid-body): nobody will read an answer,
        # and it is not a fault of ours, so no traceback; the status only feeds metrics.
        # (A reset on a connection of ours to a dependency, with the client still there,
        # is not this case and goes on to the 500 below.)
        log.debug("client disconnected during %s %s", request.method, request.path)
        return error_response(400, "client_disconnected", "the client closed the connection")
    if is_unavailable(exc):
        # Logged once per outage by db.outage.DatabaseStatus, not once per request.
        settings = request.app.get(SETTINGS)
        retry_after = settings.unavailable_retry_after_seconds if settings else 1
        return hub_error_response(DatabaseUnavailable(retry_after))
    log.exception("unhandled error in %s %s", request.method, request.path)
    return error_response(500, "internal_error", "internal server error")
