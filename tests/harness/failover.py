"""A /notifications client that, when its node goes away, resumes on another node with its
``last_seq``: what a Socket.IO client behind a load balancer does when a node dies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import socketio

from tests.harness.hub import close_client


class FailoverClient:
    def __init__(self, token: str, fallback_url: str) -> None:
        self.token = token
        self.fallback_url = fallback_url
        self.seqs: list[int] = []  # every notification:new received, in order
        self.arrived: dict[int, float] = {}  # seq -> when it first arrived (monotonic)
        self.reason: Any = None  # why the last connection ended, as the client saw it
        self.resumes = 0
        self.resumed = asyncio.Event()
        self.sio: socketio.AsyncClient | None = None

    async def connect(self, url: str) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("notification:new", self._new, namespace="/notifications")
        self.sio.on("disconnect", self._lost, namespace="/notifications")
        auth: dict[str, Any] = {"token": self.token}
        if self.seqs:
            auth["last_seq"] = self.seqs[-1]
        await self.sio.connect(
            url, namespaces=["/notifications"], auth=auth, transports=["websocket"]
        )

    def _new(self, data: dict[str, Any]) -> None:
        self.seqs.append(data["seq"])
        self.arrived.setdefault(data["seq"], time.monotonic())

    async def _lost(self, reason: Any = None) -> None:
        self.reason = reason
        asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        self.resumes += 1
        if self.sio is not None:
            await close_client(self.sio)  # closes what is left of the lost connection
        for _ in range(50):
            try:
                await self.connect(self.fallback_url)
            except Exception:  # the client library's errors while a node dies vary
                await asyncio.sleep(0.2)
                continue
            self.resumed.set()
            return

    async def close(self) -> None:
        if self.sio is not None:
            await close_client(self.sio)
