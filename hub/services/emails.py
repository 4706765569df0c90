"""Email records: queue an email (REST, events), read its status; the worker's side of the
state machine (claim under a lease, record the outcome) also lives here so that every
transition is written in one place.

Status: ``queued`` -> ``sending`` -> ``sent`` | ``retrying`` (-> ``sending`` ...) | ``failed``.

Who may act on an email is decided here, by conditional UPDATEs, never by a task's memory:
a claim makes the email ``sending`` under a lease and counts an attempt; the attempt
number is the lease's fencing token (every claim increments it), so renewing it and
recording a retry or a failure only succeed for the claim that still holds the email. An
email nobody acts on has ``next_attempt_at``, when :func:`claim_due` (the workers' sweeper)
takes it: a retry that came due, a ``sending`` email whose worker died (its lease is no
longer renewed), a ``queued`` one whose task was lost.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Email, EmailEvent
from hub.errors import NotFound, Unavailable
from hub.metrics import EMAILS
from hub.records import DeliveryRecord, EmailStatusChange, EmailStatusRecord
from hub.services.common import insert_for, iso_utc
from hub.services.leases import (
    FAILED,
    QUEUED,
    RETRYING,
    SENDING,
    SENT,
    claim_values,
    claimable,
    due_ids,
    held_by,
    outcome_values,
)
from hub.services.webhooks import report_in

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmailRequest:
    """The email task's arguments: ``send_notification_email(tenant_id, to_email, ...)``."""

    tenant_id: str
    to_email: str
    subject: str | None
    template_key: str
    context: dict[str, Any]
    # For an email made for a notification or event: whose preferences decide whether it
    # is still sent, and which category its unsubscribe link turns off. Not task arguments:
    # the worker reads them from the email's record.
    user_id: str | None = None
    category: str | None = None
    # The notification the email goes with, if any: listed with its deliveries.
    notification_id: int | None = None


class EmailQueue(Protocol):
    """Where email work goes. Services only ever call this; ``tasks.email`` implements it
    with Taskiq, and the app factory hands that implementation to the services."""

    async def kick(self, *, email_id: str, request: EmailRequest) -> None:
        """Queue the send of ``request`` under ``email_id``; :class:`Unavailable` if the
        queue cannot take it."""
        ...


# Email tasks queued at once after a batch commits.
KICK_CONCURRENCY = 50


class EmailService:
    """Queue an email and read its status: what REST (and, through the same record and queue,
    event intake) call. Built once per process with its queue and database."""

    def __init__(
        self,
        *,
        queue: EmailQueue,
        sessions: async_sessionmaker[AsyncSession],
        sweep_after_seconds: float,
    ) -> None:
        self.queue = queue
        self.sessions = sessions
        # After this long an email whose task never ran is sent by a worker's sweeper.
        self.sweep_after_seconds = sweep_after_seconds

    async def send(self, request: EmailRequest, *, email_id: str | None = None) -> str:
        """Queue an email: record it as ``queued``, then kick its task; returns its id.

        Recorded first: once the caller hears 202 the email exists and is sent exactly once,
        whatever happens next. If the kick fails (the task queue is away), the sweeper takes
        the record once the reclaim interval has passed; if recording fails, nothing was
        kicked and the caller may retry without sending twice.
        """
        email_id = email_id or new_email_id()
        async with self.sessions() as session, session.begin():
            await self.record_in(session, email_id=email_id, request=request)
        await self.kick([(email_id, request)])
        return email_id

    async def record_in(
        self, session: AsyncSession, *, email_id: str, request: EmailRequest
    ) -> bool:
        """Store a ``queued`` email inside the caller's transaction (event intake stores the
        email with the event that asked for it); False if ``email_id`` exists already."""
        return await record_email_in(
            session,
            email_id=email_id,
            request=request,
            sweep_after_seconds=self.sweep_after_seconds,
        )

    async def record_many_in(
        self, session: AsyncSession, emails: Sequence[tuple[str, EmailRequest]]
    ) -> None:
        """:meth:`record_in` for a batch, in two statements whatever its size (ids that
        exist already are left as they are)."""
        await record_emails_in(session, emails, sweep_after_seconds=self.sweep_after_seconds)

    async def kick(self, recorded: Sequence[tuple[str, EmailRequest]]) -> None:
        """Queue the tasks of emails recorded by a committed transaction, up to
        ``KICK_CONCURRENCY`` at a time (one by one, a batch of 500 waits 500 round trips).
        With the queue away they are stored already: a worker's sweeper sends them once
        their wait has passed."""
        for first in range(0, len(recorded), KICK_CONCURRENCY):
            chunk = recorded[first : first + KICK_CONCURRENCY]
            outcomes = await asyncio.gather(
                *(self.queue.kick(email_id=i, request=r) for i, r in chunk),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, Unavailable):
                    log.warning(
                        "%d emails stored; their tasks wait for the sweeper (%s)",
                        len(recorded) - first,
                        outcome,
                    )
                    return
                if isinstance(outcome, BaseException):
                    raise outcome

    async def status(self, *, tenant_id: str, email_id: str) -> EmailStatusRecord:
        """The email status object (docs/protocol.md 9.2, plus its history); 404 for any
        other tenant's email."""
        async with self.sessions() as session:
            email = await session.scalar(
                select(Email).where(Email.tenant_id == tenant_id, Email.id == email_id)
            )
            if email is None:
                raise NotFound("email not found")
            events = await session.scalars(
                select(EmailEvent)
                .where(EmailEvent.tenant_id == tenant_id, EmailEvent.email_id == email_id)
                .order_by(EmailEvent.id)
            )
            history: list[EmailStatusChange] = [
                {"status": e.status, "attempt": e.attempt, "error": e.error, "at": iso_utc(e.at)}
                for e in events
            ]
        return {
            "id": email.id,
            "status": email.status,
            "attempts": email.attempts,
            "last_error": email.last_error,
            "created_at": iso_utc(email.created_at),
            "sent_at": iso_utc(email.sent_at) if email.sent_at else None,
            "to_email": email.to_email,
            "template_key": email.template_key,
            "history": history,
        }


def new_email_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Claim:
    """One attempt's hold on an email: ``attempt`` is also the lease's fencing token."""

    email_id: str
    attempt: int
    created_at: datetime
    request: EmailRequest


def as_utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they are stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def record_email(
    *,
    sessions: async_sessionmaker[AsyncSession],
    email_id: str,
    request: EmailRequest,
    sweep_after_seconds: float,
) -> bool:
    """Store a ``queued`` email under ``email_id``; False if that id exists already.

    Its task normally claims it long before ``sweep_after_seconds``; after that the sweeper
    takes it, in case the task was lost (a Redis without persistence restarted, an embedded
    serve stopped with tasks in memory).
    """
    async with sessions() as session, session.begin():
        return await record_email_in(
            session, email_id=email_id, request=request, sweep_after_seconds=sweep_after_seconds
        )


async def email_deliveries_of(
    session: AsyncSession, *, tenant_id: str, notification_id: int
) -> list[DeliveryRecord]:
    """The emails that went with a notification, oldest first, as deliveries."""
    rows = await session.execute(
        select(Email.to_email, Email.status, Email.attempts, Email.last_error, Email.updated_at)
        .where(Email.tenant_id == tenant_id, Email.notification_id == notification_id)
        .order_by(Email.created_at, Email.id)
    )
    return [
        {
            "channel": "email",
            "target": to_email,
            "status": status,
            "attempts": attempts,
            "last_error": last_error,
            "updated_at": iso_utc(updated_at),
        }
        for to_email, status, attempts, last_error, updated_at in rows
    ]


async def record_email_in(
    session: AsyncSession, *, email_id: str, request: EmailRequest, sweep_after_seconds: float
) -> bool:
    """:func:`record_email` inside the caller's transaction (event intake stores the email
    with the event that asked for it)."""
    now = datetime.now(UTC)
    inserted = await session.execute(
        insert_for(session)(Email)
        .values(
            id=email_id,
            tenant_id=request.tenant_id,
            to_email=request.to_email,
            subject=request.subject,
            template_key=request.template_key,
            context=request.context,
            user_id=request.user_id,
            category=request.category,
            notification_id=request.notification_id,
            status=QUEUED,
            attempts=0,
            next_attempt_at=now + timedelta(seconds=sweep_after_seconds),
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Email.id)
    )
    if inserted.first() is None:
        return False
    session.add(
        EmailEvent(tenant_id=request.tenant_id, email_id=email_id, status=QUEUED, attempt=0, at=now)
    )
    return True


async def record_emails_in(
    session: AsyncSession,
    emails: Sequence[tuple[str, EmailRequest]],
    *,
    sweep_after_seconds: float,
) -> list[str]:
    """:func:`record_email_in` for many emails in two statements; the ids that were new."""
    if not emails:
        return []
    now = datetime.now(UTC)
    due = now + timedelta(seconds=sweep_after_seconds)
    inserted = await session.execute(
        insert_for(session)(Email)
        .values(
            [
                {
                    "id": email_id,
                    "tenant_id": request.tenant_id,
                    "to_email": request.to_email,
                    "subject": request.subject,
                    "template_key": request.template_key,
                    "context": request.context,
                    "user_id": request.user_id,
                    "category": request.category,
                    "notification_id": request.notification_id,
                    "status": QUEUED,
                    "attempts": 0,
                    "next_attempt_at": due,
                    "created_at": now,
                    "updated_at": now,
                }
                for email_id, request in emails
            ]
        )
        .on_conflict_do_nothing()
        .returning(Email.id)
    )
    fresh = set(inserted.scalars())
    tenants = {email_id: request.tenant_id for email_id, request in emails}
    if fresh:
        await session.execute(
            insert(EmailEvent),
            [
                {"tenant_id": tenants[i], "email_id": i, "status": QUEUED, "attempt": 0, "at": now}
                for i in fresh
            ],
        )
    return [email_id for email_id, _ in emails if email_id in fresh]


_CLAIMED = (
    Email.id,
    Email.attempts,
    Email.created_at,
    Email.tenant_id,
    Email.to_email,
    Email.subject,
    Email.template_key,
    Email.context,
    Email.user_id,
    Email.category,
)


def _claim_from_row(row: Any) -> Claim:
    return Claim(
        email_id=row.id,
        attempt=int(row.attempts),
        created_at=as_utc(row.created_at),
        request=EmailRequest(
            row.tenant_id,
            row.to_email,
            row.subject,
            row.template_key,
            row.context or {},
            user_id=row.user_id,
            category=row.category,
        ),
    )


async def _add_claim_events(session: AsyncSession, claims: list[Claim], now: datetime) -> None:
    if claims:
        await session.execute(
            insert(EmailEvent),
            [
                {
                    "tenant_id": c.request.tenant_id,
                    "email_id": c.email_id,
                    "status": SENDING,
                    "attempt": c.attempt,
                    "at": now,
                }
                for c in claims
            ],
        )


async def claim(
    *, sessions: async_sessionmaker[AsyncSession], email_id: str, lease_seconds: float
) -> Claim | None:
    """Take the email for one attempt (a task's path); None when it is not ours to send:
    already sent or failed, a retry not yet due, or another worker holds a live lease."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        row = (
            await session.execute(
                update(Email)
                .where(Email.id == email_id, claimable(Email, now))
                .values(**claim_values(Email, now, lease_seconds))
                .returning(*_CLAIMED)
            )
        ).first()
        if row is None:
            return None
        taken = _claim_from_row(row)
        await _add_claim_events(session, [taken], now)
    return taken


async def claim_due(
    *, sessions: async_sessionmaker[AsyncSession], limit: int, lease_seconds: float
) -> list[Claim]:
    """Take up to ``limit`` emails that are due (the sweeper's path), oldest due first, in
    one statement (see :func:`hub.services.leases.due_ids`)."""
    if limit <= 0:
        return []
    now = datetime.now(UTC)
    due = due_ids(Email, now, limit)
    async with sessions() as session, session.begin():
        rows = (
            await session.execute(
                update(Email)
                .where(Email.id.in_(select(due.c.id)))
                .values(**claim_values(Email, now, lease_seconds))
                .returning(*_CLAIMED)
                .execution_options(synchronize_session=False)
            )
        ).all()
        claims = [_claim_from_row(row) for row in rows]
        await _add_claim_events(session, claims, now)
    return claims


async def renew(
    *,
    sessions: async_sessionmaker[AsyncSession],
    held: list[tuple[str, int]],
    lease_seconds: float,
) -> set[tuple[str, int]]:
    """Extend the leases of ``held`` ``(email_id, attempt)`` claims in one statement; the
    ones still held. A claim missing from the answer was taken over: its attempt must not
    send."""
    if not held:
        return set()
    now = datetime.now(UTC)
    until = now + timedelta(seconds=lease_seconds)
    async with sessions() as session, session.begin():
        rows = await session.execute(
            update(Email)
            .where(Email.status == SENDING, tuple_(Email.id, Email.attempts).in_(held))
            .values(lease_until=until, next_attempt_at=until)
            .returning(Email.id, Email.attempts)
            .execution_options(synchronize_session=False)
        )
        return {(row.id, int(row.attempts)) for row in rows}


async def retry_now(*, sessions: async_sessionmaker[AsyncSession], error_prefix: str) -> int:
    """Make ``retrying`` emails whose last error starts with ``error_prefix`` due now; how
    many. Called when a server that could not be reached answers again: mail that waited
    out its outage goes at once instead of at the end of each one's (growing) backoff."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        result = await session.execute(
            update(Email)
            .where(
                Email.status == RETRYING,
                Email.next_attempt_at > now,
                Email.last_error.startswith(error_prefix, autoescape=True),
            )
            .values(next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def finish(
    *,
    sessions: async_sessionmaker[AsyncSession],
    email_id: str,
    attempt: int,
    status: str,
    error: str | None = None,
    smtp_message_id: str | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """Record the outcome of an attempt: ``sent``, ``failed`` or ``retrying`` (due again
    at ``retry_at``). False when nothing was recorded. ``sent`` and ``failed`` are reported
    to the tenant's webhooks (``email.sent``, ``email.failed``) in the same transaction.

    ``retrying`` and ``failed`` are recorded only while this attempt still holds the email:
    a worker that lost its lease must not overwrite the newer attempt's state. ``sent`` is
    recorded whoever holds it, since the server took the message (unless it is recorded
    already). ``retrying`` and ``failed`` are counted in ``notifyhub_emails_total`` when
    recorded; a send is counted by its sender the moment the server accepts it.
    """
    now = datetime.now(UTC)
    values = outcome_values(status, now, retry_at)
    if error is not None:
        values["last_error"] = error[:2000]
    if status == SENT:
        values.update(sent_at=now, smtp_message_id=smtp_message_id)
    held = held_by(Email, attempt, status)
    async with sessions() as session, session.begin():
        row = (
            await session.execute(
                update(Email)
                .where(Email.id == email_id, held)
                .values(**values)
                .returning(Email.tenant_id, Email.to_email, Email.template_key)
                .execution_options(synchronize_session=False)
            )
        ).first()
        if row is None:
            return False
        tenant_id = row.tenant_id
        if status in (SENT, FAILED):
            report = {
                "id": email_id,
                "to_email": row.to_email,
                "template_key": row.template_key,
                "status": status,
                "attempts": attempt,
                "error": error[:2000] if error else None,
            }
            await report_in(session, f"email.{status}", [(tenant_id, report)])
        session.add(
            EmailEvent(
                tenant_id=tenant_id,
                email_id=email_id,
                status=status,
                attempt=attempt,
                error=error[:2000] if error else None,
                at=now,
            )
        )
    if status != SENT:
        EMAILS.labels(status).inc()
    return True
