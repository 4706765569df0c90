"""Tenant-wide announcements: emitted at once to every connected socket, never stored."""

from __future__ import annotations

from typing import Any

from hub.delivery.bus import NotificationBus


async def broadcast(
    *, bus: NotificationBus, tenant_id: str, title: str, body: str, data: dict[str, Any]
) -> None:
    """Emit ``broadcast`` to every ``/notifications`` socket of the tenant, on every node."""
    await bus.publish_broadcast(
        tenant_id=tenant_id, payload={"title": title, "body": body, "data": data}
    )
