"""Room emits through python-socketio's manager, on every node of the hub (chat events).

Services never touch Socket.IO directly: they call a :class:`Realtime`, built around the
serve process's ``AsyncServer`` (whose Redis manager reaches the other nodes). Notifications,
read marks and broadcasts take the notification bus instead (:mod:`hub.delivery`), which
orders them per user and replays what a reconnecting client missed.
"""

from __future__ import annotations

from typing import Any, Protocol

from hub.metrics import EMITS
from hub.rooms import user_room

NOTIFICATIONS_NAMESPACE = "/notifications"
CHAT_NAMESPACE = "/chat"


class Emitter(Protocol):
    """What both ``socketio.AsyncServer`` and a write-only ``AsyncRedisManager`` offer."""

    async def emit(
        self,
        event: str,
        data: Any = None,
        *,
        to: str | list[str] | None = None,
        namespace: str | None = None,
    ) -> None: ...


class Realtime:
    def __init__(self, emitter: Emitter) -> None:
        self._emitter = emitter

    async def to_user(
        self, *, tenant_id: str, user_id: str, event: str, data: Any, namespace: str
    ) -> None:
        await self._emitter.emit(event, data, to=user_room(tenant_id, user_id), namespace=namespace)
        EMITS.labels(event).inc()

    async def to_users(
        self, *, tenant_id: str, user_ids: list[str], event: str, data: Any, namespace: str
    ) -> None:
        """One emit (one bus message) for the rooms of several users of a tenant."""
        rooms = [user_room(tenant_id, user_id) for user_id in user_ids]
        await self._emitter.emit(event, data, to=rooms, namespace=namespace)
        EMITS.labels(event).inc()
