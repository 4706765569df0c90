"""Build the python-socketio server: in-process manager, or Redis when configured.

:class:`HubServer` is python-socketio's ``AsyncServer`` with two duties added at its edge:
every outgoing packet goes through the bounded, non-waiting writes of
:mod:`hub.sockets.transport`, and every incoming packet is checked before any handler sees
it (malformed frames, reserved event names, a second CONNECT), so that what a client gets
wrong costs it an error ack or its connection, never a traceback or a handler it must not
reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import orjson
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from hub.metrics import PROTOCOL_ERRORS
from hub.settings import Settings
from hub.sockets import transport
from hub.sockets.engine import HubEngineIOServer
from hub.sockets.namespaces import NAMESPACE_CLASSES

# Names the Socket.IO protocol gives meaning to: a client sending them as events would
# otherwise run the server's own lifecycle handlers (a second connect, a fake disconnect).
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
CONCURRENT_CONNECTS = 32
# Every event handler takes one payload; more arguments are a client bug, told as such.
MAX_EVENT_ARGUMENTS = 1


class OrjsonModule:
    """The ``json``-module interface python-socketio expects, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, *args: Any, **kwargs: Any) -> Any:
        return orjson.loads(data)


def error_ack(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


class HubServer(socketio.AsyncServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Namespace CONNECTs (token check, registration, baseline) run this many at a time:
        # a reconnect storm then spreads over loop iterations instead of filling one, and a
        # health probe or a live delivery waits behind a few handshakes, not thousands.
        self._connect_slots = asyncio.Semaphore(CONCURRENT_CONNECTS)

    def _engineio_server_class(self) -> type[HubEngineIOServer]:
        return HubEngineIOServer

    def handle_request(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """engine.io's coroutine itself, not one awaiting it: one frame less for the life of
        every WebSocket."""
        return self.eio.handle_request(*args, **kwargs)  # type: ignore[no-any-return]

    async def _send_packet(self, eio_sid: str, pkt: sio_packet.Packet) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            transport.send_socketio_packet(self, eio_sid, encoded)
            return
        for part in encoded:  # binary attachments: rare, engine.io's own path
            await self.eio.send(eio_sid, part)

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: eio_packet.Packet) -> None:
        # Room emits (chat) arrive here, already encoded once for every recipient.
        if eio_pkt.packet_type == eio_packet.MESSAGE and isinstance(eio_pkt.data, str):
            transport.send_socketio_packet(self, eio_sid, eio_pkt.data)
            return
        await super()._send_eio_packet(eio_sid, eio_pkt)

    async def _handle_eio_message(self, eio_sid: str, data: str | bytes) -> None:
        if eio_sid in self._binary_packet or isinstance(data, bytes):
            await super()._handle_eio_message(eio_sid, data)
            return
        try:
            pkt = self.packet_class(encoded_packet=data)
        except (ValueError, TypeError, IndexError):
            await self._violation(eio_sid, "malformed", "not a Socket.IO packet")
            return
        kind = pkt.packet_type
        if kind == sio_packet.EVENT:
            await self._checked_event(eio_sid, pkt)
        elif kind == sio_packet.CONNECT:
            if (pkt.namespace or "/") not in self.namespaces:
                await self._refuse_namespace(eio_sid, pkt.namespace or "/")
                return
            if self.manager.sid_from_eio_sid(eio_sid, pkt.namespace or "/") is not None:
                await self._violation(eio_sid, "reconnect", "second CONNECT to a namespace")
                return
            async with self._connect_slots:
                await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
        elif kind == sio_packet.DISCONNECT:
            await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind == sio_packet.ACK:
            await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
        elif kind in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
            await self._violation(eio_sid, "binary", "binary packets are not accepted")
        else:
            await self._violation(eio_sid, "malformed", f"unexpected packet type {kind!r}")

    async def _checked_event(self, eio_sid: str, pkt: sio_packet.Packet) -> None:
        """An EVENT whose shape is wrong is answered with an error ack and dropped; one that
        asked for no ack costs the connection."""
        data = pkt.data
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            problem = "an event is [name, payload] with a string name"
        elif data[0] in RESERVED_EVENTS:
            problem = f"event name {data[0]!r} is reserved"
        elif len(data) > 1 + MAX_EVENT_ARGUMENTS:
            problem = "an event carries one payload"
        else:
            await self._handle_event(eio_sid, pkt.namespace, pkt.id, data)
            return
        if pkt.id is None:  # nothing to answer to: the client must learn it some way
            await self._violation(eio_sid, "bad_event", problem)
            return
        PROTOCOL_ERRORS.labels("bad_event").inc()
        transport.log_protocol_violation(eio_sid, problem)
        namespace = pkt.namespace or "/"
        if self.manager.is_connected(self.manager.sid_from_eio_sid(eio_sid, namespace), namespace):
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    sio_packet.ACK,
                    namespace=pkt.namespace,
                    id=pkt.id,
                    data=[error_ack("bad_request", problem)],
                ),
            )

    async def _refuse_namespace(self, eio_sid: str, namespace: str) -> None:
        """``connect_error`` shaped like the namespaces' own refusals (code in ``data``)."""
        message = f"no namespace {namespace}; connect to {' or '.join(self.namespaces)}"
        await self._send_packet(
            eio_sid,
            self.packet_class(
                sio_packet.CONNECT_ERROR,
                data={"message": "not_found", "data": {"code": "not_found", "message": message}},
                namespace=namespace,
            ),
        )

    async def _violation(self, eio_sid: str, kind: str, reason: str) -> None:
        """A frame no client library sends: drop the connection, log once per interval."""
        PROTOCOL_ERRORS.labels(kind).inc()
        transport.log_protocol_violation(eio_sid, reason)
        await transport.abort_session(self, eio_sid)


class RoomsBySid:
    """python-socketio's manager finds a leaving socket's rooms by testing every room of the
    namespace, a full scan per disconnect (0.7 ms at 10,000 sockets; minutes of CPU for a
    reconnect storm or a shutdown of 50,000). Here a socket's rooms are known: the namespace
    room (``None``), its own (``sid``) and those it entered, which are remembered (sockets of
    /notifications enter none)."""

    rooms: dict[str | None, dict[Any, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, set[str]]
    pending_disconnect: dict[str, set[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._entered: dict[tuple[str, str], set[Any]] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any, eio_sid: Any = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        if room is not None and room != sid:
            self._entered.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        entered = self._entered.get((namespace, sid))
        if entered is not None:
            entered.discard(room)
            if not entered:
                del self._entered[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """python-socketio's ``basic_disconnect``, less the scan of every room."""
        if namespace not in self.rooms:
            return
        entered = self._entered.pop((namespace, sid), ())
        for room in (None, sid, *entered):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]


class HubManager(RoomsBySid, socketio.AsyncManager):
    pass


def build_client_manager(settings: Settings) -> socketio.AsyncManager:
    """In-process on every profile: what crosses nodes takes the routed bus
    (hub.delivery.routes), which brings each node only its own sockets' events, where
    python-socketio's Redis manager has every node hear every emit on one channel."""
    return HubManager()


def build_socketio_server(settings: Settings, app: web.Application) -> socketio.AsyncServer:
    server = HubServer(
        async_mode="aiohttp",
        # Only the hub's namespaces: the default "/" would accept sockets without a token.
        namespaces=list(NAMESPACE_CLASSES),
        client_manager=build_client_manager(settings),
        json=OrjsonModule,
        cors_allowed_origins=settings.cors_allowed_origins_list,
        logger=False,
        engineio_logger=False,
    )
    transport.install(
        server,
        compress=settings.socketio_websocket_compression,
        max_buffer_bytes=settings.socket_max_buffer_bytes,
    )
    for name, namespace_class in NAMESPACE_CLASSES.items():
        server.register_namespace(namespace_class(name, app))
    return server
