"""The Socket.IO endpoint, with what a client sends checked before engine.io sees it.

engine.io answers most protocol mistakes with a 400 itself, but not all: a polling POST
whose payload does not decode is logged with a traceback and answered 200, and a session
id of any length is echoed into an ERROR line. Those are refused here with the JSON error
shape. Polling bodies reach engine.io from the body this request already read (the body
timeout middleware reads every body first), not from the consumed stream.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Container
from typing import Any

import socketio
from aiohttp import web

from api.errors import error_response
from hub.sockets.frames import payload_error

SOCKETIO_PATH = "/socket.io/"
TRANSPORTS = frozenset({"polling", "websocket"})
# engine.io's own session ids are 20 url-safe base64 characters; allow some slack.
_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

EngineIOHandler = Callable[[Any], Awaitable[web.StreamResponse]]


def attach_socketio(app: web.Application, server: socketio.AsyncServer) -> None:
    """Route the Socket.IO endpoint through :func:`guarded` (instead of ``server.attach``)."""
    engineio_sessions: dict[str, Any] = server.eio.sockets
    handler = guarded(server.handle_request, sessions=engineio_sessions)
    app.router.add_get(SOCKETIO_PATH, handler)
    app.router.add_post(SOCKETIO_PATH, handler)


def guarded(
    handle_request: EngineIOHandler, *, sessions: Container[str]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handle_request`` behind the checks; ``sessions`` holds this node's session ids."""

    async def handle(request: web.Request) -> web.StreamResponse:
        problem = query_error(request)
        sid = request.query.get("sid")
        if problem is None and sid is not None and sid not in sessions:
            # engine.io would say the same, but at ERROR level and echoing the id.
            problem = "unknown or expired session id (sid)"
        if problem is None and request.method == "POST":
            body = await request.read()
            problem = payload_error(body)
            if problem is None:
                return await handle_request(_BufferedRequest(request, body))
        if problem is not None:
            return error_response(400, "bad_request", f"not an Engine.IO request: {problem}")
        return await handle_request(request)

    return handle


def query_error(request: web.Request) -> str | None:
    """Why the query string is not one engine.io can take, or None."""
    query = request.query
    sid, j = query.get("sid"), query.get("j")
    wants_websocket = query.get("transport") == "websocket"
    problems = (
        (
            any(len(query.getall(name, [])) > 1 for name in ("EIO", "transport", "sid", "j")),
            "EIO, transport, sid and j may each be given once",
        ),
        (query.get("EIO", "4") != "4", "only Engine.IO protocol 4 (EIO=4) is supported"),
        (query.get("transport", "polling") not in TRANSPORTS, "unknown transport"),
        (sid is not None and not _SID.match(sid), "malformed session id"),
        (sid is None and request.method == "POST", "a POST needs the session id (sid)"),
        (
            wants_websocket and request.headers.get("Upgrade", "").lower() != "websocket",
            "transport=websocket needs a WebSocket upgrade request",
        ),
        (j is not None and not (j.isascii() and j.isdigit()), "malformed JSONP index"),
    )
    return next((problem for failed, problem in problems if failed), None)


class _BufferedBody:
    """The already-read body, in the one shape engine.io reads it: ``await read(n)``."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self, _n: int = -1) -> bytes:
        # engine.io asks for Content-Length bytes, which is 0 for a chunked body it would
        # then drop; the whole body is what it means.
        body, self._body = self._body, b""
        return body


class _BufferedRequest:
    """``request`` with its body served from memory; everything else is the request's."""

    def __init__(self, request: web.Request, body: bytes) -> None:
        self._request = request
        self.content = _BufferedBody(body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)
