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
