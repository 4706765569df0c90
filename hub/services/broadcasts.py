"""Tenant-wide announcements: emitted at once to every connected socket, never stored."""

from __future__ import annotations

from typing import Any

from hub.realtime import NOTIFICATIONS_NAMESPACE, Realtime

BROADCAST_EVENT = "broadcast"


async def broadcast(
    *, realtime: Realtime, tenant_id: str, title: str, body: str, data: dict[str, Any]
) -> None:
    """Emit ``broadcast`` to every ``/notifications`` socket of the tenant, on every node."""
    await realtime.to_tenant(
        tenant_id=tenant_id,
        event=BROADCAST_EVENT,
        data={"title": title, "body": body, "data": data},
        namespace=NOTIFICATIONS_NAMESPACE,
    )
