"""Request id and bearer-token authentication for every REST call."""

from __future__ import annotations

import logging
import re
import time
import uuid

from aiohttp import web

from api.errors import Handler, error_response
from hub.auth import AuthError, bearer_token
from hub.keys import PRINCIPAL, VERIFIER
from hub.logs import request_id_var

log = logging.getLogger("hub.http")

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Routes anyone may call: probes, metrics, docs and the Socket.IO/WebSocket endpoints, which
# authenticate in their own handshake.
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/socket.io", "/ws/")
PUBLIC_PATHS = frozenset({"/", "/api/openapi.json", "/api/docs"})


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (the caller's, if sane), put it in every log line and reply."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _CLIENT_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    try:
        response = await handler(request)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        log.debug(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        return response
    finally:
        request_id_var.reset(token)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every ``/api/`` route needs a valid bearer token; the principal goes on the request."""
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or not path.startswith("/api/"):
        return await handler(request)
    try:
        principal = await request.app[VERIFIER].verify(
            bearer_token(request.headers.get("Authorization"))
        )
    except AuthError as exc:
        return error_response(
            401, "unauthorized", str(exc), headers={"WWW-Authenticate": 'Bearer realm="notifyhub"'}
        )
    request[PRINCIPAL] = principal
    return await handler(request)
