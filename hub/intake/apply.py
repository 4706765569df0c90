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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ProcessedEvent
from hub.intake.envelope import EventEnvelope
from hub.metrics import EVENTS
from hub.records import NotificationRecord
from hub.rules import NewNotification
from hub.services import digests, scheduled
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


@dataclass(frozen=True, slots=True)
class _Applied:
    notifications: int
    emails: list[tuple[str, EmailRequest]]


@dataclass(frozen=True, slots=True)
class DueOutcome:
    """What one scheduler pass applied: scheduled events (with how late each was, in
    seconds) and closed digest windows."""

    events: int
    lateness: list[float]
    windows: int


@dataclass(frozen=True)
class EventApplier:
    """Applies batches of events once, whatever the source (Kafka, RabbitMQ, REST, the
    schedule): what every event source calls with its batches, built once per process and
    source."""

    notifications: NotificationService
    emails: EmailService
    source: str

    async def __call__(self, events: Sequence[EventEnvelope]) -> BatchOutcome:
        """Apply what is new in ``events`` (duplicates, in the batch or from before, are
        no-ops); an event with a future ``send_at`` is stored in the schedule instead, in
        the same transaction (its id claimed now, so a copy stays a no-op).

        Emails are stored with the event that asks for them, in its transaction, and their
        tasks queued after the commit: an event applied always has its emails, and a task
        queue that is away only delays them until a worker's sweeper finds them.
        """
        unique: dict[tuple[str, str], EventEnvelope] = {}
        for event in events:
            unique.setdefault(event.key, event)
        now = datetime.now(UTC)
        async with self.notifications.writing() as writes:
            fresh_keys = await _claim(writes.session, list(unique.values()), self.source)
            fresh = [event for key, event in unique.items() if key in fresh_keys]
            await scheduled.store_in(
                writes.session,
                [_later(event) for event in fresh if event.due_later(now)],
                now,
            )
            applied = await self._apply_in(
                writes, [event for event in fresh if not event.due_later(now)], now
            )
        await self.emails.kick(applied.emails)
        duplicates = frozenset(key for key in unique if key not in fresh_keys)
        EVENTS.labels(self.source, "applied").inc(len(fresh))
        EVENTS.labels(self.source, "duplicate").inc(len(events) - len(fresh))
        return BatchOutcome(
            applied=len(fresh),
            duplicates=len(events) - len(fresh),
            notifications=applied.notifications,
            emails=len(applied.emails),
            duplicate_keys=duplicates,
        )

    async def apply_due(self, limit: int) -> DueOutcome:
        """One scheduler pass: apply up to ``limit`` scheduled events that came due, and
        close up to ``limit`` digest windows whose time is up, each in the transaction
        that claims it (``SKIP LOCKED``: several schedulers split the work; one killed
        mid-way rolls back its claims with its work, for another to take)."""
        now = datetime.now(UTC)
        async with self.notifications.writing() as writes:
            due = await scheduled.claim_due(writes.session, now, limit)
            events = [EventEnvelope.model_validate(item.document) for item in due]
            applied = await self._apply_in(writes, events, now)
        stored = datetime.now(UTC)  # committed, and published live
        await self.emails.kick(applied.emails)
        async with self.notifications.writing() as writes:
            closed = await digests.close_due(writes.session, now, limit)
            mail = await self._record_digest_emails(writes, closed)
        await self.emails.kick(mail)
        EVENTS.labels("schedule", "applied").inc(len(due))
        return DueOutcome(
            events=len(due),
            lateness=[(stored - item.due_at).total_seconds() for item in due],
            windows=len(closed),
        )

    async def _apply_in(
        self, writes: NotificationWrites, events: Sequence[EventEnvelope], now: datetime
    ) -> _Applied:
        """Store what ``events`` (each new, each due) ask for in ``writes``: notifications
        and emails, or their digests' windows. The notifications of the batch are stored
        in one ``writes.add`` (counter rows locked in one sorted pass), after the digest
        windows (locked first, in their own sorted order)."""
        if not events:
            return _Applied(0, [])
        # Everyone this batch may notify or mail, read at once: one statement per batch.
        await writes.read_preferences(
            (event.tenant_id, r.user_id) for event in events for r in event.unique_recipients()
        )
        plan = await digests.plan_in(
            writes.session,
            [gather for event in events if event.digest is not None for gather in _gather(event)],
            now,
        )
        items = []
        keys: list[tuple[str, str, str]] = []  # (tenant, event, user) of each item
        for event in events:
            if event.notification is None or event.digest is not None:
                continue
            content = event.notification.as_new()  # one per event, shared by recipients
            for recipient in event.unique_recipients():
                items.append((event.tenant_id, recipient.user_id, content))
                keys.append((event.tenant_id, event.event_id, recipient.user_id))
        opening = plan.new_items
        created = await writes.add(items + opening)
        ids = _ids_in_app(writes, items + opening, created)
        await plan.finish(writes, ids[len(items) :])
        notified = dict(zip(keys, ids[: len(items)], strict=True))
        to_send = [
            email
            for event in events
            if event.digest is None
            for email in self._emails_of(writes, event, notified)
        ]
        await self.emails.record_many_in(writes.session, to_send)
        to_send += await self._record_digest_emails(writes, plan.closed)
        return _Applied(len(created), to_send)

    def _emails_of(
        self,
        writes: NotificationWrites,
        event: EventEnvelope,
        notified: Mapping[tuple[str, str, str], int | None],
    ) -> list[tuple[str, EmailRequest]]:
        """The emails ``event`` asks for, for the recipients who want email for its
        category (stored with the batch's others, in its transaction; queued after it)."""
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
                notification_id=notified.get((event.tenant_id, event.event_id, recipient.user_id)),
            )
            recorded.append((email_id, request))
        return recorded

    async def _record_digest_emails(
        self, writes: NotificationWrites, closed: Sequence[digests.Closed]
    ) -> list[tuple[str, EmailRequest]]:
        """The one email of each closed window that asked for one, for a recipient who
        wants email for its category: its template context gains ``digest_count`` and
        ``digest_items`` (newest first)."""
        mailed = [window for window in closed if window.email is not None]
        if not mailed:
            return []
        await writes.read_preferences((w.tenant_id, w.user_id) for w in mailed)
        recorded: list[tuple[str, EmailRequest]] = []
        for window in mailed:
            email = window.email or {}
            category = email.get("category")
            if not writes.wants(window.tenant_id, window.user_id, category, "email"):
                continue
            email_id = uuid.uuid5(
                EMAIL_ID_NAMESPACE,
                f"{window.tenant_id}\x00digest\x00{window.user_id}\x00{window.key}"
                f"\x00{window.opened_at.isoformat()}",
            ).hex
            request = EmailRequest(
                tenant_id=window.tenant_id,
                to_email=email["to_email"],
                subject=email.get("subject"),
                template_key=email["template_key"],
                context={
                    **(email.get("context") or {}),
                    "digest_count": window.count,
                    "digest_items": window.events,
                },
                user_id=window.user_id,
                category=category,
                notification_id=window.notification_id,
            )
            recorded.append((email_id, request))
        await self.emails.record_many_in(writes.session, recorded)
        return recorded


def _ids_in_app(
    writes: NotificationWrites,
    items: Sequence[tuple[str, str, NewNotification]],
    created: Sequence[NotificationRecord],
) -> list[int | None]:
    """The id ``writes.add`` gave each of ``items`` (None: its user does not want it in the
    app): it keeps, in order, the items whose user wants them."""
    records = iter(created)
    return [
        int(next(records)["id"])
        if writes.wants(tenant_id, user_id, item.category, "in_app")
        else None
        for tenant_id, user_id, item in items
    ]


def _later(event: EventEnvelope) -> scheduled.Later:
    assert event.send_at is not None
    return scheduled.Later(
        tenant_id=event.tenant_id,
        event_id=event.event_id,
        due_at=event.send_at,
        document=event.model_dump(mode="json", exclude_none=True),
    )


def _gather(event: EventEnvelope) -> list[digests.Gather]:
    """What a digest event gathers, per recipient."""
    digest = event.digest
    assert digest is not None
    part = event.notification
    item: dict[str, Any] = {"event_id": event.event_id, "type": event.type}
    if part is not None:
        item |= part.model_dump(mode="json", include={"title", "body", "category", "data", "link"})
    if event.occurred_at is not None:
        item["occurred_at"] = event.occurred_at.isoformat()
    content = part.as_new() if part is not None else None
    category = part.category if part is not None else None
    gathered = []
    for recipient in event.unique_recipients():
        email = None
        if event.email is not None and recipient.email is not None:
            email = {
                "to_email": recipient.email,
                "template_key": event.email.template_key,
                "subject": event.email.subject,
                "context": event.email.context,
                "category": category,
            }
        gathered.append(
            digests.Gather(
                tenant_id=event.tenant_id,
                user_id=recipient.user_id,
                key=digest.key,
                window_seconds=digest.window_seconds,
                item=item,
                content=content,
                email=email,
            )
        )
    return gathered
