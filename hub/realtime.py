"""The one way services push events to clients, on every node of the hub.

Services never touch Socket.IO directly: they call a :class:`Realtime`, which a serve process
builds around its ``AsyncServer`` and a worker or consumer around a write-only Redis manager.
"""

from __future__ import annotations

from typing import Any, Protocol

from hub.metrics import EMITS
from hub.sockets.rooms import tenant_room, user_room

NOTIFICATIONS_NAMESPACE = "/notifications"
CHAT_NAMESPACE = "/chat"


class Emitter(Protocol):
    """What both ``socketio.AsyncServer`` and a write-only ``AsyncRedisManager`` offer."""

    async def emit(
        self, event: str, data: Any = None, *, to: str | None = None, namespace: str | None = None
    ) -> None: ...


class Realtime:
    def __init__(self, emitter: Emitter) -> None:
        self._emitter = emitter

    async def to_user(
        self, *, tenant_id: str, user_id: str, event: str, data: Any, namespace: str
    ) -> None:
        await self._emitter.emit(event, data, to=user_room(tenant_id, user_id), namespace=namespace)
        EMITS.labels(event).inc()

    async def to_tenant(self, *, tenant_id: str, event: str, data: Any, namespace: str) -> None:
        await self._emitter.emit(event, data, to=tenant_room(tenant_id), namespace=namespace)
        EMITS.labels(event).inc()
