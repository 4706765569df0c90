"""A lean engine.io session for a hub with many idle websockets.

python-engineio gives every websocket session an ``asyncio.Queue``, a writer task parked on it
(itself wrapping each ``queue.get()`` in ``wait_for``, one more task), a task per read (each
``ws.wait()`` goes through ``ensure_future`` + ``wait_for``) and a task sleeping until the next
ping: five tasks and a queue per idle socket, about a third of its memory. Here, once a session
is on the websocket:

- every packet, engine.io's own (open, ping, noop, close) and Socket.IO's, is written straight
  to the transport (:mod:`hub.sockets.transport` bounds the unsent bytes); there is no queue
  and no writer task. Frame order is the order of the writes;
- the receive loop awaits ``ws.receive()`` in the request's own task: no task per read;
- one :class:`PingScheduler` per server sends every ping and enforces every ping timeout with
  two timers in all: pings are due ``ping_interval`` after the pong (or the connect), so the
  due times arrive in the order they were scheduled and a FIFO holds them. A client that does
  not answer a ping within ``ping_timeout`` is closed (engine.io's CLOSE packet, then the
  WebSocket close), as engine.io does.

Long-polling sessions (and a polling session until its upgrade to websocket completes) keep
engine.io's queue, created on first use, and its behaviour. The wire protocol is unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

import engineio
from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from hub.sockets import transport

PING = eio_packet.Packet(eio_packet.PING)
PING_WIRE = transport.websocket_frame(b"2")
CLOSE_WIRE = transport.websocket_frame(b"1")
_closing: set[asyncio.Future[Any]] = set()


def _in_background(awaitable: Any) -> None:
    task = asyncio.ensure_future(awaitable)
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


class PingScheduler:
    """Every ping and ping timeout of one server's sockets, on two timers."""

    __slots__ = ("_deadline_timer", "_deadlines", "_ping_timer", "_pings", "server")

    def __init__(self, server: engineio.AsyncServer) -> None:
        self.server = server
        # (due, socket): appended with now + ping_interval, so in due order.
        self._pings: deque[tuple[float, HubSocket]] = deque()
        # (due, socket, ping stamp): appended with now + ping_timeout, so in due order.
        self._deadlines: deque[tuple[float, HubSocket, float]] = deque()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._pings) + len(self._deadlines)

    def schedule(self, socket: HubSocket) -> None:
        loop = asyncio.get_running_loop()
        self._pings.append((loop.time() + self.server.ping_interval, socket))
        if self._ping_timer is None:
            self._ping_timer = loop.call_at(self._pings[0][0], self._send_pings)

    def cancel(self) -> None:
        for timer in (self._ping_timer, self._deadline_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._deadline_timer = None
        self._pings.clear()
        self._deadlines.clear()

    def _send_pings(self) -> None:
        loop = asyncio.get_running_loop()
        self._ping_timer = None
        now = loop.time()
        deadline = now + self.server.ping_timeout
        pings, deadlines = self._pings, self._deadlines
        while pings and pings[0][0] <= now:
            socket = pings.popleft()[1]
            if socket.closing or socket.closed:
                continue
            stamp = socket.last_ping = time.time()
            socket.hub_send_ping()
            deadlines.append((deadline, socket, stamp))
        if pings:
            self._ping_timer = loop.call_at(pings[0][0], self._send_pings)
        if deadlines and self._deadline_timer is None:
            self._deadline_timer = loop.call_at(deadlines[0][0], self._check_deadlines)

    async def _time_out(self, socket: HubSocket) -> None:
        await socket.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT)
        # A WebSocket session leaves the table when its handler returns; a long-polling one
        # whose client is gone would wait for a request that never comes.
        if socket.hub_direct is None and self.server.sockets.get(socket.sid) is socket:
            del self.server.sockets[socket.sid]

    def _check_deadlines(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline_timer = None
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, socket, stamp = deadlines.popleft()
            if socket.last_ping == stamp and not (socket.closing or socket.closed):
                # No pong since that ping: engine.io's own verdict, with its CLOSE packet.
                _in_background(self._time_out(socket))
        if deadlines:
            self._deadline_timer = loop.call_at(deadlines[0][0], self._check_deadlines)


class HubSocket(AsyncSocket):
    """engine.io's session, without a queue or tasks of its own once on the websocket."""

    def __init__(self, server: HubEngineIOServer, sid: str) -> None:
        # BaseSocket.__init__, less the queue: a websocket session never needs one.
        self.server = server
        self.sid = sid
        self._queue: asyncio.Queue[Any] | None = None
        self.last_ping: float | None = time.time()
        self.connected = self.upgrading = self.upgraded = self.closing = self.closed = False
        self._session: dict[str, Any] | None = None  # python-socketio's; the hub uses none
        # Set while the session is on the websocket (see transport.HubWebSocket).
        self.hub_direct: transport.DirectWriter | None = None
        self.hub_ws: Any = None
        self._reading = False

    @property
    def queue(self) -> asyncio.Queue[Any]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    @property
    def session(self) -> dict[str, Any]:
        if self._session is None:
            self._session = {}
        return self._session

    @session.setter
    def session(self, session: dict[str, Any]) -> None:
        self._session = session

    def hub_writes_directly(self) -> bool:
        return self.hub_direct is not None and not self.upgrading

    def hub_write(self, encoded: str | bytes) -> None:
        direct = self.hub_direct
        if direct is None:  # pragma: no cover - callers check
            return
        if isinstance(encoded, str):
            wire = transport.websocket_frame(encoded.encode())
        else:
            wire = transport.websocket_frame(encoded, transport.BINARY)
        transport.write_wire(self, direct, wire)

    def hub_send_ping(self) -> None:
        direct = self.hub_direct
        if direct is not None and not self.upgrading:
            transport.write_wire(self, direct, PING_WIRE)
        else:
            self.queue.put_nowait(PING)

    def schedule_ping(self) -> None:
        # Only after the previous ping was answered (engine.io's rule), on the shared timer.
        if self.last_ping:
            self.last_ping = None
            self.server.hub_pings.schedule(self)

    async def send(self, pkt: eio_packet.Packet) -> None:
        if not self.hub_writes_directly():
            await super().send(pkt)
            return
        if await self.check_ping_timeout():
            self.hub_write(pkt.encode())

    async def close(
        self, wait: bool = True, abort: bool = False, reason: str | None = None
    ) -> None:
        direct = self.hub_direct
        if direct is None:
            await super().close(wait=wait, abort=abort, reason=reason)
            return
        if self.closed or self.closing:
            return
        self.closing = True
        await self.server._trigger_event(
            "disconnect", self.sid, reason or self.server.reason.SERVER_DISCONNECT, run_async=False
        )
        if not abort:
            transport.write_wire(self, direct, CLOSE_WIRE)
        self.closed = True
        if self._reading and self.hub_ws is not None:
            # Ends the receive loop; aiohttp then waits (bounded) for the client's close frame.
            _in_background(self.hub_ws.close())

    def _drain_queue(self) -> None:
        """Write what engine.io queued before the websocket took over, then drop the queue."""
        queue = self._queue
        if queue is None:
            return
        while not queue.empty():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is not None:
                self.hub_write(pkt.encode())
        if not queue._getters:  # type: ignore[attr-defined]
            self._queue = None

    async def _upgrade_handshake(self, ws: Any) -> bool:
        """A polling session upgrading: the probe handshake, as engine.io does it."""
        self.upgrading = True
        probe = await self._next_packet(ws)
        if probe is None or probe.packet_type != eio_packet.PING or probe.data != "probe":
            self.upgrading = False
            return False
        self.hub_write(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
        upgrade = await self._next_packet(ws)
        if upgrade is None or upgrade.packet_type != eio_packet.UPGRADE:
            self.upgraded = False
            self.upgrading = False
            return False
        self.upgraded = True
        return True

    @staticmethod
    async def _next_packet(ws: Any) -> eio_packet.Packet | None:
        try:
            return eio_packet.Packet(encoded_packet=await ws.wait())
        except OSError:
            return None

    async def _websocket_handler(self, ws: Any) -> None:
        """engine.io's websocket handler, less the writer task and the task per read."""
        if self.connected:
            if not await self._upgrade_handshake(ws):
                return
        else:
            self.connected = True
            self.upgraded = True
        self._drain_queue()
        self.upgrading = False
        self.hub_ws = ws
        self._reading = True
        try:
            while True:
                try:
                    data = await ws.wait()
                except Exception:  # the connection ended, however
                    break
                if data is None:
                    break
                try:
                    await self.receive(eio_packet.Packet(encoded_packet=data))
                except eio_exceptions.UnknownPacketError:
                    pass
                except eio_exceptions.SocketIsClosedError:
                    break
                except Exception:
                    self.server.logger.exception("Unknown receive error")
        finally:
            self._reading = False
            self.hub_ws = None
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)


# Request headers a Socket.IO handshake reads, as WSGI environ keys.
HANDSHAKE_HEADERS = {
    name: "HTTP_" + name.upper().replace("-", "_")
    for name in (
        "Authorization",
        "Connection",
        "Host",
        "Origin",
        "Upgrade",
        "User-Agent",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
    )
}


def handshake_environ(request: web.Request) -> dict[str, Any]:
    """engine.io's environ for a WebSocket handshake, with only :data:`HANDSHAKE_HEADERS`
    (repeated headers joined with commas, as engine.io's aiohttp driver does)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": request.query_string,
        "PATH_INFO": request.path,
        "REMOTE_ADDR": "127.0.0.1",  # what engine.io's aiohttp driver says too
        "aiohttp.request": request,
    }
    headers = request.headers
    for name, key in HANDSHAKE_HEADERS.items():
        values = headers.getall(name, None)
        if values:
            environ[key] = ",".join(values)
    environ["wsgi.url_scheme"] = environ.get("HTTP_X_FORWARDED_PROTO", "http")
    return environ


class HubEngineIOServer(engineio.AsyncServer):
    """engine.io's server, whose sessions are :class:`HubSocket` and share one ping timer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # engine.io's monitor task visits every socket once per ping_timeout (a task and a
        # timer per visit) to close those whose pong is late: the PingScheduler does that, and
        # forgets closed long-polling sessions, on its two timers.
        kwargs.setdefault("monitor_clients", False)
        super().__init__(*args, **kwargs)
        self.hub_pings = PingScheduler(self)

    async def shutdown(self) -> None:
        self.hub_pings.cancel()
        await super().shutdown()

    def handle_request(self, request: web.Request) -> Awaitable[Any]:
        """A new WebSocket session (``EIO=4&transport=websocket``, no ``sid``) takes a short
        path: only the headers a handshake needs go into its environ, the query is parsed once
        by aiohttp, and fewer frames stay on the stack for the socket's life (this method
        returns the coroutine to await rather than awaiting it). Anything else, or a
        handshake engine.io would refuse, is engine.io's own ``handle_request``."""
        query = request.query
        if (
            request.method != "GET"
            or "sid" in query
            or "j" in query
            or query.get("transport") != "websocket"
            or query.get("EIO") != "4"
            or "websocket" not in self.transports
            or not transport.is_websocket_upgrade(request)
        ):
            return super().handle_request(request)  # type: ignore[no-any-return]
        environ = handshake_environ(request)
        origin = environ.get("HTTP_ORIGIN")
        if origin and self.cors_allowed_origins != []:
            allowed = self._cors_allowed_origins(environ)
            if allowed is not None and origin not in allowed:
                return super().handle_request(request)  # type: ignore[no-any-return]
        return self._handle_connect(environ, "websocket")

    async def _handle_connect(
        self, environ: dict[str, Any], transport_name: str, jsonp_index: int | None = None
    ) -> Any:
        """engine.io's ``_handle_connect`` (python-engineio 4.x), making a HubSocket."""
        if self.start_service_task:  # type: ignore[has-type]
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        sid = self.generate_id()
        s = HubSocket(self, sid)
        self.sockets[sid] = s

        pkt = eio_packet.Packet(
            eio_packet.OPEN,
            {
                "sid": sid,
                "upgrades": self._upgrades(sid, transport_name),
                "pingTimeout": int(self.ping_timeout * 1000),
                "pingInterval": int(self.ping_interval + self.ping_interval_grace_period) * 1000,
                "maxPayload": self.max_http_buffer_size,
            },
        )
        await s.send(pkt)
        del pkt

        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            del self.sockets[sid]
            self.logger.warning("Application rejected connection")
            return self._unauthorized(ret or None)

        s.schedule_ping()

        if transport_name == "websocket":
            # s.handle_get_request -> s._upgrade_websocket, less two frames kept for the
            # socket's life.
            ret = await self._async["websocket"](s._websocket_handler, self)(environ)
            if s.closed and sid in self.sockets:
                del self.sockets[sid]
            return ret
        s.connected = True
        headers = None
        if self.cookie:
            cookie = (
                self.cookie
                if isinstance(self.cookie, dict)
                else {"name": self.cookie, "path": "/", "SameSite": "Lax"}
            )
            headers = [("Set-Cookie", self._generate_sid_cookie(sid, cookie))]
        try:
            return self._ok(await s.poll(), headers=headers, jsonp_index=jsonp_index)
        except eio_exceptions.QueueEmpty:
            return self._bad_request()
