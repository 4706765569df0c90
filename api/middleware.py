"""Request id and bearer-token authentication for every REST call."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable

from aiohttp import web
from aiohttp.typedefs import Middleware

from api.declarations import PUBLIC_PATHS
from api.errors import Handler, answer_and_close, error_response
from hub.auth import AuthError, bearer_token
from hub.keys import PRINCIPAL, SETTINGS, VERIFIER
from hub.logs import bind_caller, request_id_var, unbind
from hub.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = logging.getLogger("hub.http")

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request an id (the caller's, if sane), put it in every log line and reply."""
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _CLIENT_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = _route_template(request)
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_LATENCY.labels(route, request.method).observe(elapsed)
        principal = request.get(PRINCIPAL)
        log.debug(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            status,
            elapsed * 1000,
            extra={
                "tenant_id": principal.tenant_id if principal else None,
                "user_id": principal.user_id if principal else None,
            },
        )
        request_id_var.reset(token)


def _route_template(request: web.Request) -> str:
    """The route as registered ("/api/conversations/{conversation_id}/read/"), never the
    raw path: raw paths would make one time series per id."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
def auth_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Every ``/api/`` route needs a valid bearer token, but those declared ``public`` (the
    documents); the principal goes on the request. Routes outside ``/api/`` (probes, the
    playground, Socket.IO and the legacy WebSocket, which authenticate in their handshake)
    are not checked here.

    Those go straight to their handler: no frame of this middleware stays on the stack for
    the request's life (a WebSocket's lasts as long as the socket)."""
    path = request.path
    if not path.startswith("/api/") or path in request.app.get(PUBLIC_PATHS, frozenset()):
        return handler(request)
    return _authenticated(request, handler)


async def _authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        principal = await request.app[VERIFIER].verify(
            bearer_token(request.headers.get("Authorization"))
        )
    except AuthError as exc:
        return error_response(
            401, "unauthorized", str(exc), headers={"WWW-Authenticate": 'Bearer realm="notifyhub"'}
        )
    request[PRINCIPAL] = principal
    bound = bind_caller(principal.tenant_id, principal.user_id)
    try:
        return await handler(request)
    finally:
        unbind(bound)


# What the admin port serves: probes and metrics, nothing a client could reach otherwise.
ADMIN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def admin_port_middleware(admin_port: int) -> Middleware:
    """Answer only :data:`ADMIN_PATHS` on ``NOTIFYHUB_ADMIN_PORT`` (404 for anything else)."""

    @web.middleware
    async def only_probes_on_admin_port(
        request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        if sockname and sockname[1] == admin_port and request.path not in ADMIN_PATHS:
            return error_response(404, "not_found", "only probes and metrics are served here")
        return await handler(request)

    return only_probes_on_admin_port


@web.middleware
def body_timeout_middleware(
    request: web.Request, handler: Handler
) -> Awaitable[web.StreamResponse]:
    """Read the whole body within ``http_body_timeout_seconds`` of the request head, or
    answer 408 and close: a client trickling its body (slowloris) cannot hold a
    connection and a handler for longer. Views read the cached body afterwards.

    A request without a body (a WebSocket handshake among them) goes straight to its
    handler: no frame of this middleware stays on the stack for the socket's life."""
    if not request.can_read_body:
        return handler(request)
    return _body_in_time(request, handler)


async def _body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    timeout = request.app[SETTINGS].http_body_timeout_seconds
    try:
        async with asyncio.timeout(timeout):
            await request.read()
    except TimeoutError:
        log.info("%s %s: body not received within %.0f s", request.method, request.path, timeout)
        response = error_response(
            408, "request_timeout", f"request body not received within {timeout:g} s"
        )
        return await answer_and_close(request, response)
    return await handler(request)
