"""A tenant's own settings (``GET|PUT /api/tenant/settings/``): its retention periods and
how long its chat messages may be edited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import TenantSettings
from hub.errors import InvalidInput
from hub.services.common import insert_for


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    retention_days: int | None = None  # None: the hub's NOTIFYHUB_RETENTION_DAYS
    chat_retention_days: int | None = None  # None: chat messages are kept
    # None: the hub's NOTIFYHUB_CHAT_EDIT_WINDOW_SECONDS
    chat_edit_window_seconds: int | None = None


class TenantSettingsService:
    """Reads and replaces tenant settings; built once per process."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], max_retention_days: int):
        self.sessions = sessions
        self.max_retention_days = max_retention_days

    async def get(self, *, tenant_id: str) -> TenantPolicy:
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(
                        TenantSettings.retention_days,
                        TenantSettings.chat_retention_days,
                        TenantSettings.chat_edit_window_seconds,
                    ).where(TenantSettings.tenant_id == tenant_id)
                )
            ).first()
        return TenantPolicy() if row is None else TenantPolicy(row[0], row[1], row[2])

    async def put(self, *, tenant_id: str, settings: TenantPolicy) -> TenantPolicy:
        """Replace the tenant's settings (a field left out goes back to the default)."""
        days = settings.retention_days
        if days is not None and days > self.max_retention_days:
            # A tenant may keep less than the hub does, never more: the hub's setting is
            # what the operator promised to keep at most.
            raise InvalidInput(
                f"retention_days must be at most the hub's {self.max_retention_days} "
                "(NOTIFYHUB_RETENTION_DAYS)"
            )
        values = {
            "retention_days": days,
            "chat_retention_days": settings.chat_retention_days,
            "chat_edit_window_seconds": settings.chat_edit_window_seconds,
            "updated_at": datetime.now(UTC),
        }
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert_for(session)(TenantSettings)
                .values(tenant_id=tenant_id, **values)
                .on_conflict_do_update(index_elements=["tenant_id"], set_=values)
            )
        return settings
