"""Email records: queue an email (REST, events), read its status; the worker's side of the
state machine (claim under a lease, record the outcome) also lives here so that every
transition is written in one place.

Status: ``queued`` -> ``sending`` -> ``sent`` | ``retrying`` (-> ``sending`` ...) | ``failed``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Email, EmailEvent
from hub.errors import NotFound
from hub.metrics import EMAILS
from hub.services.common import insert_for, iso_utc

QUEUED, SENDING, SENT, RETRYING, FAILED = "queued", "sending", "sent", "retrying", "failed"
FINAL = frozenset({SENT, FAILED})


@dataclass(frozen=True, slots=True)
class EmailRequest:
    """The seed's task arguments: ``send_notification_email(tenant_id, to_email, ...)``."""

    tenant_id: str
    to_email: str
    subject: str | None
    template_key: str
    context: dict[str, Any]


def new_email_id() -> str:
    return uuid.uuid4().hex


async def record_email(
    *, sessions: async_sessionmaker[AsyncSession], email_id: str, request: EmailRequest
) -> bool:
    """Store a ``queued`` email under ``email_id``; False if that id exists already."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        inserted = await session.execute(
            insert_for(session)(Email)
            .values(
                id=email_id,
                tenant_id=request.tenant_id,
                to_email=request.to_email,
                subject=request.subject,
                template_key=request.template_key,
                context=request.context,
                status=QUEUED,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
            .returning(Email.id)
        )
        if inserted.first() is None:
            return False
        session.add(
            EmailEvent(
                tenant_id=request.tenant_id, email_id=email_id, status=QUEUED, attempt=0, at=now
            )
        )
    return True


async def get_email(
    *, sessions: async_sessionmaker[AsyncSession], tenant_id: str, email_id: str
) -> dict[str, Any]:
    """The CONTRACT status object (plus its history); 404 for any other tenant's email."""
    async with sessions() as session:
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
        history = [
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


async def claim(
    *, sessions: async_sessionmaker[AsyncSession], email_id: str, lease_seconds: float
) -> int | None:
    """Take the email for one attempt; the attempt number, or None when it is not ours to
    send (already sent or failed, or another worker holds a live lease)."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        attempt = await session.scalar(
            update(Email)
            .where(
                Email.id == email_id,
                or_(
                    Email.status == QUEUED,
                    and_(Email.status.in_([SENDING, RETRYING]), Email.lease_until < now),
                ),
            )
            .values(
                status=SENDING,
                attempts=Email.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(Email.attempts)
        )
        if attempt is None:
            return None
        tenant_id = await session.scalar(select(Email.tenant_id).where(Email.id == email_id))
        session.add(
            EmailEvent(
                tenant_id=tenant_id, email_id=email_id, status=SENDING, attempt=attempt, at=now
            )
        )
    return int(attempt)


async def finish(
    *,
    sessions: async_sessionmaker[AsyncSession],
    email_id: str,
    attempt: int,
    status: str,
    error: str | None = None,
    smtp_message_id: str | None = None,
    retry_at: datetime | None = None,
) -> None:
    """Record the outcome of an attempt: ``sent``, ``failed`` or ``retrying`` (until
    ``retry_at``, which is also the lease: nobody else takes it before then)."""
    now = datetime.now(UTC)
    EMAILS.labels(status).inc()
    values: dict[str, Any] = {"status": status, "updated_at": now, "lease_until": retry_at}
    if error is not None:
        values["last_error"] = error[:2000]
    if status == SENT:
        values.update(sent_at=now, smtp_message_id=smtp_message_id)
    async with sessions() as session, session.begin():
        tenant_id = await session.scalar(
            update(Email).where(Email.id == email_id).values(**values).returning(Email.tenant_id)
        )
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
