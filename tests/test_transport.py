"""The Socket.IO websocket transport: no permessage-deflate unless configured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from tests.harness.hub import RunningHub, SettingsFactory

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
    """hub/sockets/transport.py writes frames through private parts of aiohttp and
    python-engineio; an upgrade that moves them must fail here, not in production."""
    import asyncio
    import inspect

    from aiohttp import web
    from aiohttp._websocket.writer import WebSocketWriter
    from engineio.async_socket import AsyncSocket

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
    assert "self.queue.get()" in inspect.getsource(AsyncSocket.poll), (
        "engine.io's writer no longer waits on its queue: direct writes may reorder frames"
    )


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
