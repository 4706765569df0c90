"""``/ws/notifications/{tenant_id}/{user_id}/?token=``: the plain WebSocket of the Django
Channels service this hub replaces. Same events as the ``/notifications`` namespace, as
JSON text frames ``{"type", "data"}``, on every node."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from hub.auth import AuthError
from hub.ids import parse_id
from hub.keys import LEGACY_SOCKETS, NOTIFICATION_DELIVERY, SETTINGS, VERIFIER
from hub.sockets.sinks import WebSocketSink
from hub.sockets.transport import close_connection

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
HEARTBEAT_SECONDS = 25.0


async def legacy_notifications(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, compress=False)
    await socket.prepare(request)
    # Old clients carry the token in the query string: this endpoint exists for them.
    try:
        principal = await request.app[VERIFIER].verify(request.query.get("token"))
    except AuthError as exc:
        await socket.close(code=CLOSE_UNAUTHORIZED, message=str(exc).encode()[:120])
        return socket
    path_tenant, path_user = request.match_info["tenant_id"], request.match_info["user_id"]
    if (path_tenant, path_user) != (principal.tenant_id, principal.user_id):
        await socket.close(code=CLOSE_FORBIDDEN, message=b"path does not match the token")
        return socket
    last_seq = parse_id(request.query.get("last_seq", ""))

    delivery = request.app[NOTIFICATION_DELIVERY]
    sink = WebSocketSink(socket, max_buffer_bytes=request.app[SETTINGS].socket_max_buffer_bytes)
    subscriber = delivery.subscribe_user(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        sink=sink,
        last_seq=last_seq,
        wants_broadcasts=False,
    )
    delivery.start_replay(subscriber)
    request.app[LEGACY_SOCKETS].add(socket)
    # No refresh on this old protocol: the socket closes when its token expires.
    expiry = asyncio.get_running_loop().call_later(
        max(0.0, principal.expires_at - time.time()),
        close_connection,
        sink.writer,
        CLOSE_UNAUTHORIZED,
        b"token expired",
    )
    try:
        async for message in socket:
            # The legacy protocol is server-to-client; client frames are ignored.
            if message.type == WSMsgType.ERROR:
                break
    finally:
        expiry.cancel()
        request.app[LEGACY_SOCKETS].discard(socket)
        delivery.unsubscribe(subscriber)
    return socket
