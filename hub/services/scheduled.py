"""The schedule: events (and REST creates) with a future ``send_at``, stored in the
database until a scheduler applies them, or until they are cancelled.

An item moves ``pending`` -> ``sent`` in the very transaction that applies it (the
scheduler claims due items with ``FOR UPDATE SKIP LOCKED`` and marks them ``sent`` before
storing their notifications and emails), so a scheduler that dies mid-way rolls the claim
back with the work and another one applies it: once, whatever is killed when. A cancel
takes the same row lock, so it either lands before the apply (``cancelled``) or sees
``sent`` (409).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import ProcessedEvent, ScheduledEvent
from hub.errors import HubError, NotFound
from hub.services.common import insert_for
from hub.services.emails import as_utc

PENDING, SENT, CANCELLED = "pending", "sent", "cancelled"


@dataclass(frozen=True, slots=True)
class Later:
    """One item to apply at ``due_at``: its event document, as it arrived."""

    tenant_id: str
    event_id: str
    due_at: datetime
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed item: its document and when it was due (for the lateness metric)."""

    document: dict[str, Any]
    due_at: datetime


async def store_in(session: AsyncSession, items: Sequence[Later], now: datetime) -> None:
    """Store ``items`` in the caller's transaction (which claimed their event ids, so each
    is new; a repeated one is a no-op all the same)."""
    if not items:
        return
    await session.execute(
        insert_for(session)(ScheduledEvent).on_conflict_do_nothing(),
        [
            {
                "tenant_id": item.tenant_id,
                "event_id": item.event_id,
                "due_at": item.due_at,
                "status": PENDING,
                "document": item.document,
                "created_at": now,
            }
            for item in items
        ],
    )


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[Due]:
    """Mark up to ``limit`` due items ``sent`` in the caller's transaction, oldest due first;
    the caller applies them in that transaction. ``SKIP LOCKED``: several schedulers split
    what is due instead of queueing on each other's locks (SQLite has one writer at a time).

    A materialized CTE, so the locked pick runs exactly once (see ``leases.due_ids``)."""
    if limit <= 0:
        return []
    due = (
        select(ScheduledEvent.id)
        .where(ScheduledEvent.status == PENDING, ScheduledEvent.due_at <= now)
        .order_by(ScheduledEvent.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    rows = await session.execute(
        update(ScheduledEvent)
        .where(ScheduledEvent.id.in_(select(due.c.id)))
        .values(status=SENT, sent_at=now)
        .returning(ScheduledEvent.document, ScheduledEvent.due_at)
        .execution_options(synchronize_session=False)
    )
    items = [Due(document=dict(row.document), due_at=as_utc(row.due_at)) for row in rows]
    items.sort(key=lambda item: item.due_at)
    return items


class AlreadySent(HubError):
    status, code = 409, "already_sent"


class ScheduleService:
    """Cancelling scheduled events (REST); the schedule is filled by event intake and
    emptied by the schedulers (``hub.intake``)."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def cancel(self, *, tenant_id: str, event_id: str) -> None:
        await cancel(sessions=self.sessions, tenant_id=tenant_id, event_id=event_id)


async def cancel(
    *, sessions: async_sessionmaker[AsyncSession], tenant_id: str, event_id: str
) -> None:
    """Cancel the tenant's scheduled event ``event_id`` (again: still cancelled); 409 once
    it was applied (scheduled or not), 404 for an id the tenant never sent."""
    async with sessions() as session, session.begin():
        cancelled = (
            await session.execute(
                update(ScheduledEvent)
                .where(
                    ScheduledEvent.tenant_id == tenant_id,
                    ScheduledEvent.event_id == event_id,
                    ScheduledEvent.status.in_((PENDING, CANCELLED)),
                )
                .values(status=CANCELLED)
                .returning(ScheduledEvent.id)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if cancelled is not None:
            return
        # Not pending: sent from the schedule, applied at once, or unknown.
        applied = await session.scalar(
            select(ProcessedEvent.event_id).where(
                ProcessedEvent.tenant_id == tenant_id, ProcessedEvent.event_id == event_id
            )
        )
    if applied is None:
        raise NotFound("no such event")
    raise AlreadySent("the event was sent already")
