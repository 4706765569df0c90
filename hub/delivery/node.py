"""What one ``serve`` node delivers from the bus: notifications and chat messages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from hub.delivery.bus import (
    PublishedMessage,
    PublishedNotification,
    TenantBroadcast,
    UserEmit,
    UserEvents,
)
from hub.delivery.chat import ChatDelivery
from hub.delivery.notifications import NotificationDelivery


class NodeDelivery:
    """The bus listener of a node: each kind of message to the delivery that owns it."""

    def __init__(
        self,
        notifications: NotificationDelivery,
        chat: ChatDelivery,
        *,
        emit_here: Callable[[UserEmit], Awaitable[None]],
    ) -> None:
        self.notifications = notifications
        self.chat = chat
        self._emit_here = emit_here

    async def on_new(self, items: Sequence[PublishedNotification]) -> None:
        await self.notifications.on_new(items)

    async def on_user_events(self, events: UserEvents) -> None:
        await self.notifications.on_user_events(events)

    async def on_broadcast(self, broadcast: TenantBroadcast) -> None:
        await self.notifications.on_broadcast(broadcast)

    async def on_message(self, item: PublishedMessage) -> None:
        await self.chat.on_message(item)

    async def on_emit(self, emit: UserEmit) -> None:
        await self._emit_here(emit)

    async def on_disconnect_user(self, tenant_id: str, user_id: str) -> None:
        self.notifications.disconnect_user(tenant_id, user_id)
        self.chat.disconnect_user(tenant_id, user_id)

    async def on_resubscribed(self) -> None:
        await self.notifications.on_resubscribed()
        await self.chat.streams.on_resubscribed()

    async def watch_for_lag(self, interval_seconds: float) -> None:
        """Both lag checks (see :mod:`hub.delivery.ordered`) until cancelled."""
        await asyncio.gather(
            self.notifications.watch_for_lag(interval_seconds),
            self.chat.streams.watch_for_lag(interval_seconds),
        )

    async def close(self) -> None:
        await self.notifications.close()
        await self.chat.close()
