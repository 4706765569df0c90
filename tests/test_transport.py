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
