"""Sinks: how one connection receives frames (see :class:`hub.delivery.notifications.Sink`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from hub.sockets.transport import send_socketio_packet

log = logging.getLogger(__name__)


class SocketIOSink:
    """A Socket.IO socket. The event packet is assembled around the already-encoded data,
    so a notification is JSON-encoded once however many sockets receive it."""

    __slots__ = ("_eio", "_eio_sid", "_namespace", "_prefix", "_server", "_sid")

    def __init__(self, server: Any, sid: str, namespace: str) -> None:
        self._server = server
        self._eio = server.eio
        self._sid = sid
        self._namespace = namespace
        self._eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
        # Socket.IO EVENT packet: type 2, the namespace, then ["event", data].
        self._prefix = f'2{namespace},["'

    async def send(self, event: str, data_json: str) -> None:
        await send_socketio_packet(
            self._server, self._eio_sid, f'{self._prefix}{event}",{data_json}]'
        )

    async def close(self) -> None:
        await self._server.disconnect(self._sid, namespace=self._namespace)


class WebSocketSink:
    """A legacy plain WebSocket: JSON text frames ``{"type", "data"}``, written by a task of
    its own so that ``send`` never waits on a slow client."""

    MAX_QUEUED = 10_000

    def __init__(self, socket: web.WebSocketResponse) -> None:
        self._socket = socket
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(self.MAX_QUEUED)
        self._writer = asyncio.create_task(self._write())

    async def send(self, event: str, data_json: str) -> None:
        try:
            self._queue.put_nowait(f'{{"type":"{event}","data":{data_json}}}')
        except asyncio.QueueFull:
            log.warning("legacy WebSocket client too slow; closing it")
            await self.close()

    async def _write(self) -> None:
        while (frame := await self._queue.get()) is not None:
            try:
                await self._socket.send_str(frame)
            except (ConnectionError, RuntimeError):
                return

    async def close(self) -> None:
        await self._socket.close()

    async def stop(self) -> None:
        """Stop the writer after it has sent what is queued."""
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
