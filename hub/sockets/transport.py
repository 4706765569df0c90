"""engine.io's aiohttp WebSocket transport, adjusted for a hub that fans out to many sockets:

- permessage-deflate is off unless configured: a browser always offers it, and a deflate
  context costs ~100 KB per idle socket;
- every packet of a websocket session is written straight to the socket's transport (see
  :mod:`hub.sockets.engine`: no per-socket queue or writer task), one frame encoded once for
  every recipient;
- **nothing ever waits for a client to read**. A write only appends to the transport's
  buffer; a socket whose unsent bytes pass ``max_buffer_bytes`` is a slow consumer and is
  aborted at once (and counted), so one client that stops reading can neither stall the
  delivery loop that serves everybody else nor grow the process without bound;
- once the WebSocket is up, the handshake's environ keeps only the few keys a Socket.IO
  connect handler reads (it is kept for the whole session).

aiohttp's own flow control (awaiting a drain above 64 KB) is turned off for these sockets:
the limit above replaces it, and no write ever waits.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

import socketio
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket.writer import WebSocketWriter
from engineio import packet as eio_packet

from hub.logs import ThrottledLog
from hub.metrics import SLOW_CONSUMERS

log = logging.getLogger(__name__)
# What clients get wrong is logged once per socket per minute, whatever they send.
PROTOCOL_LOG = ThrottledLog(log)

# engine.io frames a Socket.IO packet as a MESSAGE, type "4".
ENGINEIO_MESSAGE = "4"
# A socket on long-polling has no transport buffer to measure: bound its queue by packets.
MAX_QUEUED_PACKETS = 1000
# aiohttp drains once this many bytes were written since the last drain: never, for us.
NO_DRAIN = 1 << 62
TEXT = int(WSMsgType.TEXT)
BINARY = int(WSMsgType.BINARY)
CLOSE = int(WSMsgType.CLOSE)
_closing: set[asyncio.Future[Any]] = set()
# What a Socket.IO connect handler may read from the handshake environ; the rest (every
# header, aiohttp's request, the input stream) is dropped once the WebSocket is up.
ENVIRON_KEPT = frozenset(
    {
        "REQUEST_METHOD",
        "QUERY_STRING",
        "PATH_INFO",
        "REMOTE_ADDR",
        "HTTP_AUTHORIZATION",
        "HTTP_ORIGIN",
        "HTTP_USER_AGENT",
        "HTTP_X_FORWARDED_FOR",
    }
)


class DirectWriter:
    """Per-socket state for direct writes: the aiohttp writer, its transport and the limit."""

    __slots__ = ("limit", "transport", "writer")

    def __init__(self, writer: WebSocketWriter, limit: int) -> None:
        self.writer = writer
        self.transport = writer.transport
        self.limit = limit


def websocket_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """A complete unmasked WebSocket frame (RFC 6455 5.2), as a server sends it."""
    length = len(payload)
    first = 0x80 | opcode  # FIN: never fragmented
    if length < 126:
        header = bytes((first, length))
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def close_connection(writer: WebSocketWriter, code: int, reason: bytes) -> None:
    """Send a close frame and close the connection once it is out, without waiting for the
    client's answer (one that never answers must not hold anything open)."""
    transport = writer.transport
    if transport.is_closing():
        return
    transport.write(websocket_frame(struct.pack("!H", code) + reason[:123], CLOSE))
    transport.close()


def make_websocket_class(*, compress: bool, max_buffer_bytes: int) -> type[Any]:
    class HubWebSocket:
        """engine.io's aiohttp WebSocket wrapper (``wait``, ``send``, ``close``), in slots;
        it lives as long as the socket."""

        __slots__ = ("_sock", "handler", "server")

        def __init__(self, handler: Any, server: Any) -> None:
            self.handler = handler
            self.server = server
            self._sock: web.WebSocketResponse | None = None

        async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
            request = environ["aiohttp.request"]
            sock = self._sock = web.WebSocketResponse(
                max_msg_size=self.server.max_http_buffer_size, compress=compress
            )
            await sock.prepare(request)
            writer = sock._writer
            if writer is None:  # prepare() creates it; without it there is nothing to serve
                raise RuntimeError("aiohttp prepared a WebSocket without a writer")
            writer._limit = NO_DRAIN
            slim_environ(environ)
            # ``handler`` is the bound ``_websocket_handler`` of the engine.io socket.
            engineio_socket = self.handler.__self__
            engineio_socket.hub_direct = DirectWriter(writer, max_buffer_bytes)
            try:
                await self.handler(self)
            finally:
                engineio_socket.hub_direct = None
            return sock

        async def close(self) -> None:
            if self._sock is not None:
                await self._sock.close()

        async def send(self, message: str | bytes) -> None:
            if self._sock is None:
                return
            if isinstance(message, bytes):
                await self._sock.send_bytes(message)
            else:
                await self._sock.send_str(message)

        async def wait(self) -> bytes | str:
            if self._sock is None:
                raise OSError("not prepared")
            data = (await self._sock.receive()).data
            if not isinstance(data, bytes | str):  # closed, closing or an error
                raise OSError
            # engine.io decodes text frames by their first character; anything else would
            # raise inside its receive loop and end the request as a 500 with a traceback.
            if isinstance(data, str) and (not data or data[0] not in "0123456"):
                engineio_socket = self.handler.__self__
                log_protocol_violation(engineio_socket.sid, "not an Engine.IO packet")
                # No close handshake: a client sending garbage would not answer it.
                if engineio_socket.hub_direct is not None:
                    engineio_socket.hub_direct.transport.abort()
                raise OSError("not an Engine.IO packet")
            return data

    return HubWebSocket


def install(server: socketio.AsyncServer, *, compress: bool, max_buffer_bytes: int) -> None:
    """Use :func:`make_websocket_class` for this server only (the driver table is shared)."""
    websocket_class = make_websocket_class(compress=compress, max_buffer_bytes=max_buffer_bytes)
    server.eio._async = {**server.eio._async, "websocket": websocket_class}


class SocketIOFrame:
    """One Socket.IO packet, encoded once for however many sockets receive it: the whole
    WebSocket frame in bytes (identical for every recipient, servers do not mask), and the
    packet text for sessions that must go through engine.io's queue."""

    __slots__ = ("packet", "wire")

    def __init__(self, packet: str) -> None:
        self.packet = packet
        self.wire = websocket_frame((ENGINEIO_MESSAGE + packet).encode())


def send_socketio_packet(server: socketio.AsyncServer, eio_sid: str, packet: str) -> bool:
    """Send an encoded Socket.IO packet to one engine.io session without waiting."""
    return send_frame(server, eio_sid, SocketIOFrame(packet))


def send_frame(server: socketio.AsyncServer, eio_sid: str, frame: SocketIOFrame) -> bool:
    """Send a prepared frame to one engine.io session without waiting.

    Returns False when the session is gone or was just dropped as a slow consumer.
    """
    engineio_socket = server.eio.sockets.get(eio_sid)
    if engineio_socket is None or engineio_socket.closed:
        return False
    direct: DirectWriter | None = engineio_socket.hub_direct
    if direct is not None:
        if not engineio_socket.upgrading:
            return write_wire(engineio_socket, direct, frame.wire)
        if direct.transport.get_write_buffer_size() > direct.limit:
            drop_slow_consumer(engineio_socket, direct, "websocket")
            return False
    elif engineio_socket.queue.qsize() >= MAX_QUEUED_PACKETS:
        drop_slow_consumer(engineio_socket, None, "polling")
        return False
    # Polling, or an upgrade under way: engine.io's queue, flushed in order after it.
    engineio_socket.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, data=frame.packet))
    return True


def write_wire(engineio_socket: Any, direct: DirectWriter, wire: bytes) -> bool:
    """Append a complete frame to a websocket session's transport, never waiting."""
    transport = direct.transport
    if transport.is_closing():
        return False
    if transport.get_write_buffer_size() > direct.limit:
        drop_slow_consumer(engineio_socket, direct, "websocket")
        return False
    transport.write(wire)
    return True


def is_websocket_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def slim_environ(environ: dict[str, Any]) -> None:
    """Keep only :data:`ENVIRON_KEPT` of a handshake environ, in place (python-socketio holds
    the same dict for the session)."""
    kept = {key: environ[key] for key in ENVIRON_KEPT if key in environ}
    environ.clear()
    environ.update(kept)


def drop_slow_consumer(engineio_socket: Any, direct: DirectWriter | None, kind: str) -> None:
    """Abort a socket that does not read: its unsent frames are discarded, not flushed."""
    SLOW_CONSUMERS.labels(kind).inc()
    log.warning(
        "socket %s dropped: it does not read (%s unsent bytes)",
        engineio_socket.sid,
        direct.transport.get_write_buffer_size() if direct else "many",
    )
    if direct is not None:
        direct.transport.abort()
    else:
        # A poller: end its session without flushing; the queued packets are never sent.
        _close_in_background(engineio_socket)


async def abort_session(server: socketio.AsyncServer, eio_sid: str) -> None:
    """End a session at once, without the close handshake a hostile client would ignore."""
    engineio_socket = server.eio.sockets.get(eio_sid)
    if engineio_socket is None:
        return
    direct: DirectWriter | None = engineio_socket.hub_direct
    if direct is not None:
        # The receive loop sees the connection end and runs the disconnect handlers.
        direct.transport.abort()
    else:
        await engineio_socket.close(wait=False, abort=True)


def going_away(writer: WebSocketWriter) -> None:
    """Tell a WebSocket client this node is going away (close code 1001) and close the
    connection once the frame is out, without waiting for its answer. Socket.IO clients read
    this as a lost transport and reconnect (to another node), resuming with ``last_seq``."""
    close_connection(writer, WSCloseCode.GOING_AWAY, b"server shutting down")


def close_all(server: socketio.AsyncServer) -> list[asyncio.WriteTransport]:
    """Close every Socket.IO connection of this node at once (shutdown); returns the
    WebSocket transports, which close once their last frames are out."""
    closing: list[asyncio.WriteTransport] = []
    for engineio_socket in tuple(server.eio.sockets.values()):
        direct: DirectWriter | None = engineio_socket.hub_direct
        if direct is not None:
            going_away(direct.writer)
            closing.append(direct.transport)
        elif not engineio_socket.closed:
            _close_in_background(engineio_socket)
    return closing


async def abort_unflushed(transports: list[asyncio.WriteTransport], *, grace: float) -> None:
    """Give closing connections ``grace`` seconds to send what they hold, then abort the
    rest: a client that stopped reading must not hold a node's shutdown."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    # A transport has no event for "buffer empty": poll it, for one second at most.
    while any(each.get_write_buffer_size() for each in transports) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    for each in transports:
        each.abort()


def _close_in_background(engineio_socket: Any) -> None:
    """End an engine.io session without flushing, from code that must not wait."""
    closing = asyncio.ensure_future(engineio_socket.close(wait=False, abort=True))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


def log_protocol_violation(sid: str, reason: str) -> None:
    PROTOCOL_LOG.warning(sid, "socket %s: protocol violation (%s)", sid, reason)
