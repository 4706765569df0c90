"""Apply a batch of events once: one transaction, set-based, whatever the source.

Exactly-once effect on at-least-once delivery: ``processed_events`` has one row per
``(tenant_id, event_id)``; the batch inserts its keys with ON CONFLICT DO NOTHING and only
the fresh ones create notifications, in the same transaction. Email tasks are kicked before
the commit with ids derived from the event, so a crash after the kick and before the commit
re-kicks the same ids on redelivery, which the email records make harmless. Live emits
happen after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ProcessedEvent
from hub.intake.envelope import EventEnvelope
from hub.metrics import EVENTS
from hub.services.emails import EmailRequest, EmailService
from hub.services.notifications import NotificationService, NotificationWrites

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
    """Applies batches of events once, whatever the source (Kafka, RabbitMQ, REST): what
    every event source calls with its batches, built once per process and source."""

    notifications: NotificationService
    emails: EmailService
    source: str

    async def __call__(self, events: Sequence[EventEnvelope]) -> BatchOutcome:
        """Apply what is new in ``events`` (duplicates, in the batch or from before, are
        no-ops).

        Emails are stored with the event that asks for them, in its transaction, and their
        tasks queued after the commit: an event applied always has its emails, and a task
        queue that is away only delays them until a worker's sweeper finds them.
        """
        unique: dict[tuple[str, str], EventEnvelope] = {}
        for event in events:
            unique.setdefault(event.key, event)
        to_send: list[tuple[str, EmailRequest]] = []
        async with self.notifications.writing() as writes:
            fresh_keys = await _claim(writes.session, list(unique.values()), self.source)
            fresh = [event for key, event in unique.items() if key in fresh_keys]
            # Everyone this batch may notify or mail, read at once: one statement per batch.
            await writes.read_preferences(
                (event.tenant_id, r.user_id) for event in fresh for r in event.unique_recipients()
            )
            items = []
            for event in fresh:
                if event.notification is None:
                    continue
                content = event.notification.as_new()  # one per event, shared by recipients
                items += [(event.tenant_id, r.user_id, content) for r in event.unique_recipients()]
            created = await writes.add(items)
            for event in fresh:
                to_send += await self._record_emails(writes, event)
        await self.emails.kick(to_send)
        duplicates = frozenset(key for key in unique if key not in fresh_keys)
        EVENTS.labels(self.source, "applied").inc(len(fresh))
        EVENTS.labels(self.source, "duplicate").inc(len(events) - len(fresh))
        return BatchOutcome(
            applied=len(fresh),
            duplicates=len(events) - len(fresh),
            notifications=len(created),
            emails=len(to_send),
            duplicate_keys=duplicates,
        )

    async def _record_emails(
        self, writes: NotificationWrites, event: EventEnvelope
    ) -> list[tuple[str, EmailRequest]]:
        """Store the emails ``event`` asks for, in its transaction, for the recipients who
        want email for its category; what to queue after it."""
        if event.email is None:
            return []
        category = event.notification.category if event.notification else None
        recorded: list[tuple[str, EmailRequest]] = []
        for recipient in event.unique_recipients():
            if recipient.email is None or not writes.wants(
                event.tenant_id, recipient.user_id, category, "email"
            ):
                continue
            email_id = email_id_for(event, recipient.user_id)
            request = EmailRequest(
                tenant_id=event.tenant_id,
                to_email=recipient.email,
                subject=event.email.subject,
                template_key=event.email.template_key,
                context=event.email.context,
                user_id=recipient.user_id,
                category=category,
            )
            await self.emails.record_in(writes.session, email_id=email_id, request=request)
            recorded.append((email_id, request))
        return recorded
