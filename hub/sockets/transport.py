"""engine.io's aiohttp WebSocket transport, adjusted in two ways:

- permessage-deflate is off unless configured: a browser always offers it, and a deflate
  context costs ~100 KB per idle socket;
- the hub can write a frame straight to the socket's WebSocket when nothing is queued for
  it, skipping engine.io's per-socket queue and writer task (the cost that dominates fan-out).

Direct writes keep frame order: they only happen while engine.io's writer task is parked on
an empty queue, i.e. when nothing engine.io queued (CONNECT, acks, pings) is still unsent.
"""

from __future__ import annotations

from typing import Any

import socketio
from aiohttp import WSMsgType, web
from engineio.async_drivers import aiohttp as engineio_aiohttp

# engine.io frames a Socket.IO packet as a MESSAGE, type "4".
ENGINEIO_MESSAGE = "4"


def make_websocket_class(*, compress: bool) -> type[Any]:
    class HubWebSocket(engineio_aiohttp.WebSocket):
        async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
            request = environ["aiohttp.request"]
            self._sock = web.WebSocketResponse(
                max_msg_size=self.server.max_http_buffer_size, compress=compress
            )
            await self._sock.prepare(request)
            self.environ = environ
            # ``handler`` is the bound ``_websocket_handler`` of the engine.io socket.
            engineio_socket = self.handler.__self__
            engineio_socket.hub_websocket = self._sock
            try:
                await self.handler(self)
            finally:
                engineio_socket.hub_websocket = None
            return self._sock

    return HubWebSocket


def install(server: socketio.AsyncServer, *, compress: bool) -> None:
    """Use :func:`make_websocket_class` for this server only (the driver table is shared)."""
    server.eio._async = {**server.eio._async, "websocket": make_websocket_class(compress=compress)}


async def send_socketio_packet(server: socketio.AsyncServer, eio_sid: str, packet: str) -> None:
    """Send an encoded Socket.IO packet to one engine.io session, directly when possible."""
    engineio_socket = server.eio.sockets.get(eio_sid)
    if engineio_socket is None:
        return
    websocket: web.WebSocketResponse | None = getattr(engineio_socket, "hub_websocket", None)
    queue = engineio_socket.queue
    if (
        websocket is not None
        and not engineio_socket.upgrading
        and queue.empty()
        and queue._getters  # the writer task waits on the queue: nothing of its is in flight
        and not websocket.closed
    ):
        await websocket.send_frame((ENGINEIO_MESSAGE + packet).encode(), WSMsgType.TEXT)
        return
    await server.eio.send(eio_sid, packet)
