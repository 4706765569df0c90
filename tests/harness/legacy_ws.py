"""A client of the legacy plain WebSocket endpoint that records its JSON frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest


@dataclass
class LegacyClient:
    socket: aiohttp.ClientWebSocketResponse
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def of_type(self, kind: str) -> list[Any]:
        return [frame["data"] for frame in self.frames if frame["type"] == kind]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout):
            while len(self.of_type(kind)) < count:
                await asyncio.sleep(0.01)
        return self.of_type(kind)

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(orjson.loads(message.data))


LegacyConnect = Callable[..., Awaitable[LegacyClient]]


@pytest.fixture
async def legacy_connect() -> AsyncIterator[LegacyConnect]:
    """Open legacy WebSockets; ``connect`` returns once the socket is open (or closed by
    the server: then ``socket.close_code`` says why)."""
    session = aiohttp.ClientSession()
    clients: list[LegacyClient] = []

    async def connect(
        url: str, tenant: str, user: str, token: str, query: str = ""
    ) -> LegacyClient:
        ws_url = (
            url.replace("http://", "ws://")
            + f"/ws/notifications/{tenant}/{user}/?token={token}{query}"
        )
        socket = await session.ws_connect(ws_url, autoping=True)
        client = LegacyClient(socket)
        client.reader = asyncio.create_task(client._read())
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.socket.close()
        if client.reader is not None:
            await asyncio.gather(client.reader, return_exceptions=True)
    await session.close()
