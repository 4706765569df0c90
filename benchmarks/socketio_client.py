"""The Socket.IO client side the benchmarks share: a namespace handshake on a bare websocket."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

# Frames after which a websocket reads nothing more.
CLOSED_TYPES = frozenset(
    {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    }
)


def engineio_url(host: str, port: int) -> str:
    return f"ws://{host}:{port}/socket.io/?EIO=4&transport=websocket"


async def join_namespace(ws: aiohttp.ClientWebSocketResponse, namespace: str, token: str) -> None:
    """Read the Engine.IO open packet, connect to ``namespace`` with ``token`` and wait for
    the answer (pings answered meanwhile); ConnectionError when refused or closed."""
    connected, refused = f"40{namespace},", f"44{namespace},"
    opening = await ws.receive()
    if opening.type is not aiohttp.WSMsgType.TEXT or not opening.data.startswith("0{"):
        raise ConnectionError(f"no engine.io open packet: {opening!r}")
    await ws.send_str(connected + json.dumps({"token": token}))
    while True:
        answer = await ws.receive()
        if answer.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"closed during connect: {answer!r}")
        if answer.data.startswith(connected):
            return
        if answer.data.startswith(refused):
            raise ConnectionError(f"refused: {answer.data}")
        if answer.data == "2":
            await ws.send_str("3")


async def stop_reading(
    reader: asyncio.Task[None] | None, ws: aiohttp.ClientWebSocketResponse | None
) -> None:
    """Cancel the task that reads ``ws`` and close ``ws`` (two seconds at most)."""
    if reader is not None:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    if ws is not None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await ws.close()
