"""The Socket.IO websocket transport: no permessage-deflate unless configured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from hub.keys import SOCKETIO
from tests.harness.hub import RunningHub, SettingsFactory
from tests.harness.rawws import connect_socketio
from tests.harness.tokens import hs256_token

WEBSOCKET_PATH = "/socket.io/?EIO=4&transport=websocket"


async def negotiated_extensions(url: str) -> str | None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url.replace("http://", "ws://") + WEBSOCKET_PATH, compress=15) as socket,
    ):
        opening = await socket.receive_str()
        assert opening.startswith("0{")
        return socket._response.headers.get("Sec-WebSocket-Extensions")


async def test_deflate_is_refused_by_default(hub: RunningHub) -> None:
    # Browsers always offer permessage-deflate; accepting it costs ~100 KB per idle socket.
    assert await negotiated_extensions(hub.url) is None


async def test_deflate_when_configured(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory
) -> None:
    hub = await hub_factory(hub_settings(socketio_websocket_compression=True))
    extensions = await negotiated_extensions(hub.url)
    assert extensions is not None and "permessage-deflate" in extensions


def test_internals_the_direct_writes_rely_on_are_there() -> None:
    """hub/sockets/transport.py and engine.py write frames through private parts of aiohttp
    and python-engineio and replace parts of engine.io's session; an upgrade that moves them
    must fail here, not in production."""
    import asyncio
    import inspect

    import engineio.async_drivers.aiohttp
    import engineio.base_server
    import socketio
    from aiohttp import web
    from aiohttp._websocket.writer import WebSocketWriter
    from engineio.async_server import AsyncServer
    from engineio.async_socket import AsyncSocket
    from engineio.base_socket import BaseSocket

    from hub.sockets.engine import HubSocket

    assert "transport" in inspect.signature(WebSocketWriter).parameters, (
        "aiohttp's WebSocketWriter no longer holds the transport: update transport.py"
    )
    assert "_writer" in web.WebSocketResponse.__annotations__, (
        "aiohttp's WebSocketResponse._writer is gone: update transport.py and sinks.py"
    )
    assert "self._limit" in inspect.getsource(WebSocketWriter.send_frame), (
        "aiohttp's drain threshold moved: update transport.NO_DRAIN"
    )
    assert hasattr(asyncio.Queue(), "_getters"), "asyncio.Queue._getters is gone"
    # engine.py: HubSocket replaces BaseSocket.__init__ (less the queue) ...
    stub = type("Server", (), {"create_queue": staticmethod(asyncio.Queue)})()
    assert set(vars(BaseSocket(stub, "sid"))) <= set(vars(HubSocket(stub, "sid"))) | {
        "queue",
        "session",
    }, "engine.io's socket has new state: update HubSocket.__init__"
    # ... HubEngineIOServer._handle_connect is a copy of engine.io's, making a HubSocket ...
    assert "async_socket.AsyncSocket(self, sid)" in inspect.getsource(
        AsyncServer._handle_connect
    ), "engine.io's _handle_connect changed: update HubEngineIOServer._handle_connect"
    assert list(inspect.signature(AsyncServer._handle_connect).parameters) == [
        "self",
        "environ",
        "transport",
        "jsonp_index",
    ], "engine.io's _handle_connect changed: update HubEngineIOServer._handle_connect"
    # ... the websocket driver gets the socket's _websocket_handler, pongs reschedule pings,
    # the ping timeout check is engine.io's, and socketio picks the engine.io server class.
    assert "self._websocket_handler" in inspect.getsource(AsyncSocket._upgrade_websocket)
    assert "self.schedule_ping()" in inspect.getsource(AsyncSocket.receive)
    assert "last_ping" in inspect.getsource(AsyncSocket.check_ping_timeout)
    assert "_engineio_server_class()" in inspect.getsource(socketio.base_server.BaseServer)
    # ... and the short handshake path uses engine.io's driver table and CORS check.
    assert "self.server._async['websocket'](" in inspect.getsource(AsyncSocket._upgrade_websocket)
    assert "def _cors_allowed_origins(self, environ)" in inspect.getsource(
        engineio.base_server.BaseServer
    )
    assert "'aiohttp.request': request" in inspect.getsource(
        engineio.async_drivers.aiohttp.translate_request
    ), "engine.io's aiohttp environ changed: update engine.handshake_environ"


def test_library_internals_the_hub_extends_are_there() -> None:
    """hub/app.py starts python-socketio's manager itself, tasks/broker.py extends
    RedisStreamBroker's listen with its own attributes and tasks/worker.py drives taskiq's
    Receiver: an upgrade that renames any of these must fail here, saying where."""
    import inspect

    import socketio
    from taskiq.receiver import Receiver
    from taskiq_redis import RedisStreamBroker

    server = socketio.AsyncServer(async_mode="aiohttp")
    assert hasattr(server, "manager_initialized"), "python-socketio: update hub/app.py"
    broker = RedisStreamBroker("redis://127.0.0.1:1/0")
    for name in (
        "connection_pool",
        "consumer_group_name",
        "consumer_name",
        "queue_name",
        "block",
        "count",
        "idle_timeout",
        "unacknowledged_batch_size",
        "_ack_generator",
    ):
        assert hasattr(broker, name), f"taskiq-redis lost {name}: update tasks/broker.py"
    assert "finish_event" in inspect.signature(Receiver.listen).parameters, (
        "taskiq's Receiver.listen changed: update tasks/worker.py"
    )


def test_python_socketio_pubsub_manager_keeps_its_listener_task_as_thread() -> None:
    """hub/app.py stops the Redis manager's listener through ``manager.thread``."""
    import inspect

    from socketio.async_pubsub_manager import AsyncPubSubManager

    assert "self.thread = " in inspect.getsource(AsyncPubSubManager.initialize), (
        "python-socketio's AsyncPubSubManager moved its listener task: update hub/app.py"
    )


async def test_a_client_that_stops_answering_pings_is_closed(hub: RunningHub, tenant: str) -> None:
    """Pings every pingInterval; no pong within pingTimeout of a ping closes the session
    (engine.io's CLOSE packet). A client that answers stays, however many pings it gets."""
    eio = hub.app[SOCKETIO].eio
    eio.ping_interval, eio.ping_timeout = 0.4, 0.4
    token = hs256_token(tenant=tenant, user="pinged")
    answering = await connect_socketio(hub.port, "/notifications", token)
    silent = await connect_socketio(hub.port, "/notifications", token)
    started = time.monotonic()
    pings = 0
    while time.monotonic() - started < 2.0:
        frame = await answering.read_text(timeout=2)
        assert frame == "2", frame
        pings += 1
        answering.send_text("3")
    assert pings >= 3
    # The silent one got its first ping after 0.4 s and no pong: closed by 0.8 s.
    assert await silent.read_text(timeout=0.1) == "2"
    assert await silent.read_text(timeout=1) == "1"  # engine.io CLOSE
    assert await silent.read_text(timeout=2) is None
    assert await silent.closed_by_server(timeout=2)
    for _ in range(50):  # the session is gone from the server
        if len(eio.sockets) == 1:
            break
        await asyncio.sleep(0.05)
    assert len(eio.sockets) == 1
    answering.send_text("41/notifications,")
    answering.close()


async def test_a_poller_that_stops_polling_is_forgotten(hub: RunningHub) -> None:
    """A long-polling session whose client vanished times out like a silent WebSocket and
    leaves the session table (engine.io's monitor task is off: the ping scheduler does it)."""
    eio = hub.app[SOCKETIO].eio
    eio.ping_interval, eio.ping_timeout = 0.3, 0.3
    async with (
        aiohttp.ClientSession() as http,
        http.get(hub.url + "/socket.io/?EIO=4&transport=polling") as response,
    ):
        opening = await response.text()
    assert opening.startswith("0{")
    sid = orjson.loads(opening[1:])["sid"]
    assert sid in eio.sockets
    for _ in range(60):
        if sid not in eio.sockets:
            break
        await asyncio.sleep(0.05)
    assert sid not in eio.sockets
