"""Sinks: how one connection receives frames (see :class:`hub.delivery.ordered.Sink`).

Both write without waiting for the client: a frame is appended to the connection's buffer,
and a connection whose buffer passes the configured limit is dropped (see
:mod:`hub.sockets.transport`), so delivery to everybody else never waits on one reader.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp._websocket.writer import WebSocketWriter

from hub.delivery.ordered import Outgoing
from hub.metrics import SLOW_CONSUMERS
from hub.sockets.transport import NO_DRAIN, SocketIOFrame, send_frame, websocket_frame

log = logging.getLogger(__name__)
# The key of the legacy WebSocket's encoding in Outgoing.encoded (Socket.IO's are namespaces).
LEGACY_FORMAT = "legacy"


class SocketIOSink:
    """A Socket.IO socket. The event packet is assembled around the already-encoded data,
    so a notification is JSON-encoded once however many sockets receive it."""

    __slots__ = ("_eio_sid", "_namespace", "_prefix", "_server", "_sid")

    def __init__(self, server: Any, sid: str, namespace: str) -> None:
        self._server = server
        self._sid = sid
        self._namespace = namespace
        self._eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
        # Socket.IO EVENT packet: type 2, the namespace, then ["event", data].
        self._prefix = f'2{namespace},["'

    async def send(self, outgoing: Outgoing) -> bool:
        frame = outgoing.encoded.get(self._namespace)
        if frame is None:
            frame = SocketIOFrame(f'{self._prefix}{outgoing.event}",{outgoing.data_json}]')
            outgoing.encoded[self._namespace] = frame
        return send_frame(self._server, self._eio_sid, frame)

    async def close(self) -> None:
        await self._server.disconnect(self._sid, namespace=self._namespace)


class WebSocketSink:
    """A legacy plain WebSocket: JSON text frames ``{"type", "data"}``, written straight to
    the connection's buffer; past ``max_buffer_bytes`` unsent, the connection is aborted."""

    __slots__ = ("_max_buffer_bytes", "_socket", "writer")

    def __init__(self, socket: web.WebSocketResponse, *, max_buffer_bytes: int) -> None:
        writer = socket._writer
        if writer is None:
            raise RuntimeError("the WebSocket must be prepared before it becomes a sink")
        # aiohttp would otherwise await a drain inside send: we measure the buffer instead.
        writer._limit = NO_DRAIN
        self._socket = socket
        self.writer: WebSocketWriter = writer
        self._max_buffer_bytes = max_buffer_bytes

    async def send(self, outgoing: Outgoing) -> bool:
        transport = self.writer.transport
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self._max_buffer_bytes:
            SLOW_CONSUMERS.labels("legacy_websocket").inc()
            log.warning("legacy WebSocket dropped: it does not read")
            transport.abort()
            return False
        wire = outgoing.encoded.get(LEGACY_FORMAT)
        if wire is None:
            text = f'{{"type":"{outgoing.event}","data":{outgoing.data_json}}}'
            wire = outgoing.encoded[LEGACY_FORMAT] = websocket_frame(text.encode())
        transport.write(wire)
        return True

    async def close(self) -> None:
        await self._socket.close()
