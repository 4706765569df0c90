"""Apply a batch of events once: one transaction, set-based, whatever the source.

Exactly-once effect on at-least-once delivery: ``processed_events`` has one row per
``(tenant_id, event_id)``; the batch inserts its keys with ON CONFLICT DO NOTHING and only
the fresh ones create notifications, in the same transaction. Email tasks are kicked before
the commit with ids derived from the event, so a crash after the kick and before the commit
re-kicks the same ids on redelivery, which the email records make harmless. Live emits
happen after the commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import ProcessedEvent
from hub.delivery.bus import NotificationBus
from hub.errors import Unavailable
from hub.intake.envelope import EventEnvelope
from hub.metrics import EVENTS
from hub.services.emails import EmailQueue, EmailRequest, record_email_in
from hub.services.notifications import publish_created, store_notifications

log = logging.getLogger(__name__)

# Email task ids for event recipients: stable, so redelivery finds the same email.
EMAIL_ID_NAMESPACE = uuid.UUID("6f1d4b58-2c2e-4f63-9a55-8f0d0c7b2d11")

_PG_CLAIM_EVENTS = text(
    """
    INSERT INTO processed_events (tenant_id, event_id, type, source, applied_at)
    SELECT tenant_id, event_id, type, :source, :now
    FROM unnest(CAST(:tenant_ids AS text[]), CAST(:event_ids AS text[]), CAST(:types AS text[]))
         AS event(tenant_id, event_id, type)
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, event_id
    """
)


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    duplicates: int
    notifications: int
    emails: int
    duplicate_keys: frozenset[tuple[str, str]]


def email_id_for(event: EventEnvelope, user_id: str) -> str:
    return uuid.uuid5(EMAIL_ID_NAMESPACE, f"{event.tenant_id}\x00{event.event_id}\x00{user_id}").hex


async def _claim(
    session: AsyncSession, events: Sequence[EventEnvelope], source: str
) -> set[tuple[str, str]]:
    """Insert the events' keys; the ones that were not there before."""
    now = datetime.now(UTC)
    if session.get_bind().dialect.name == "postgresql":
        result = await session.execute(
            _PG_CLAIM_EVENTS,
            {
                "source": source,
                "now": now,
                "tenant_ids": [e.tenant_id for e in events],
                "event_ids": [e.event_id for e in events],
                "types": [e.type for e in events],
            },
        )
        return {(tenant, event_id) for tenant, event_id in result}
    fresh: set[tuple[str, str]] = set()
    for event in events:
        inserted = await session.execute(
            sqlite.insert(ProcessedEvent)
            .values(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                type=event.type,
                source=source,
                applied_at=now,
            )
            .on_conflict_do_nothing()
            .returning(ProcessedEvent.event_id)
        )
        if inserted.first() is not None:
            fresh.add(event.key)
    return fresh


@dataclass(frozen=True)
class EventApplier:
    """``apply_events`` bound to the resources of one process and one source: what every
    event source (Kafka, RabbitMQ, REST) calls with its batches."""

    sessions: async_sessionmaker[AsyncSession]
    bus: NotificationBus
    emails: EmailQueue
    source: str
    # After this long an email whose task never ran is sent by a worker's sweeper.
    email_sweep_after_seconds: float = 120.0

    async def __call__(self, events: Sequence[EventEnvelope]) -> BatchOutcome:
        return await apply_events(
            sessions=self.sessions,
            bus=self.bus,
            emails=self.emails,
            events=events,
            source=self.source,
            email_sweep_after_seconds=self.email_sweep_after_seconds,
        )


async def apply_events(
    *,
    sessions: async_sessionmaker[AsyncSession],
    bus: NotificationBus,
    emails: EmailQueue,
    events: Sequence[EventEnvelope],
    source: str,
    email_sweep_after_seconds: float = 120.0,
) -> BatchOutcome:
    """Apply what is new in ``events`` (duplicates, in the batch or from before, are no-ops).

    Emails are stored with the event that asks for them, in its transaction, and their tasks
    queued after the commit: an event applied always has its emails, and a task queue that is
    away only delays them until a worker's sweeper finds them.
    """
    unique: dict[tuple[str, str], EventEnvelope] = {}
    for event in events:
        unique.setdefault(event.key, event)
    to_send: list[tuple[str, EmailRequest]] = []
    async with sessions() as session, session.begin():
        fresh_keys = await _claim(session, list(unique.values()), source)
        fresh = [event for key, event in unique.items() if key in fresh_keys]
        items = []
        for event in fresh:
            if event.notification is None:
                continue
            content = event.notification.as_new()  # one per event, shared by its recipients
            items += [(event.tenant_id, r.user_id, content) for r in event.unique_recipients()]
        created = await store_notifications(session, items) if items else []
        for event in fresh:
            if event.email is None:
                continue
            for recipient in event.unique_recipients():
                if recipient.email is None:
                    continue
                email_id = email_id_for(event, recipient.user_id)
                request = EmailRequest(
                    tenant_id=event.tenant_id,
                    to_email=recipient.email,
                    subject=event.email.subject,
                    template_key=event.email.template_key,
                    context=event.email.context,
                )
                await record_email_in(
                    session,
                    email_id=email_id,
                    request=request,
                    sweep_after_seconds=email_sweep_after_seconds,
                )
                to_send.append((email_id, request))
    await publish_created(bus, created)
    await _kick_all(emails, to_send)
    duplicates = frozenset(key for key in unique if key not in fresh_keys)
    EVENTS.labels(source, "applied").inc(len(fresh))
    EVENTS.labels(source, "duplicate").inc(len(events) - len(fresh))
    return BatchOutcome(
        applied=len(fresh),
        duplicates=len(events) - len(fresh),
        notifications=len(created),
        emails=len(to_send),
        duplicate_keys=duplicates,
    )


async def _kick_all(emails: EmailQueue, to_send: Sequence[tuple[str, EmailRequest]]) -> None:
    for number, (email_id, request) in enumerate(to_send):
        try:
            await emails.kick(email_id=email_id, request=request)
        except Unavailable as exc:
            # Stored already: a worker's sweeper sends them once their wait has passed.
            log.warning(
                "%d emails stored; their tasks wait for the sweeper (%s)",
                len(to_send) - number,
                exc,
            )
            return
