"""Chat events to users' rooms, on whichever nodes hold their sockets.

Services never touch Socket.IO directly: they call a :class:`Realtime`. On the embedded
profile it emits on the process's ``AsyncServer``; with Redis it publishes on the routed bus
(:mod:`hub.delivery.routes`), and each node that holds sockets of the users emits on its own
server (python-socketio's manager is in-process: its one Redis channel, which every node
had to hear, is not used). Notifications, read marks and broadcasts take the notification
bus directly (:mod:`hub.delivery`), which orders them per user and replays what a
reconnecting client missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from hub.metrics import EMITS
from hub.rooms import user_room

NOTIFICATIONS_NAMESPACE = "/notifications"
CHAT_NAMESPACE = "/chat"


class Emitter(Protocol):
    """What ``socketio.AsyncServer`` offers (here, emits to this process's sockets)."""

    async def emit(
        self,
        event: str,
        data: Any = None,
        *,
        to: str | list[str] | None = None,
        namespace: str | None = None,
    ) -> None: ...


class UserEmits(Protocol):
    """The routed bus (:class:`hub.delivery.bus.RedisBus`): to the nodes of these users."""

    async def emit_to_users(
        self,
        *,
        tenant_id: str,
        user_ids: Sequence[str],
        event: str,
        data_json: str,
        namespace: str,
    ) -> None: ...


class Realtime:
    def __init__(self, emitter: Emitter, *, routed: UserEmits | None = None) -> None:
        self._emitter = emitter
        self._routed = routed

    async def to_user(
        self, *, tenant_id: str, user_id: str, event: str, data: Any, namespace: str
    ) -> None:
        await self.to_users(
            tenant_id=tenant_id, user_ids=[user_id], event=event, data=data, namespace=namespace
        )

    async def to_users(
        self, *, tenant_id: str, user_ids: list[str], event: str, data: Any, namespace: str
    ) -> None:
        """One emit (one bus message per node concerned) for several users of a tenant."""
        if self._routed is None:
            await self.emit_here(
                tenant_id=tenant_id, user_ids=user_ids, event=event, data=data, namespace=namespace
            )
        else:
            await self._routed.emit_to_users(
                tenant_id=tenant_id,
                user_ids=user_ids,
                event=event,
                data_json=orjson.dumps(data).decode(),
                namespace=namespace,
            )
        EMITS.labels(event).inc()

    async def emit_here(
        self, *, tenant_id: str, user_ids: Sequence[str], event: str, data: Any, namespace: str
    ) -> None:
        """To the users' sockets on this node only."""
        rooms = [user_room(tenant_id, user_id) for user_id in user_ids]
        await self._emitter.emit(
            event, data, to=rooms[0] if len(rooms) == 1 else rooms, namespace=namespace
        )
