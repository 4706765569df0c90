"""Outbound webhooks: tenants' endpoints, and the durable outbox of what to tell them.

A change the hub reports (``notification.created``, ...) writes one delivery per subscribed
endpoint of its tenant in the change's own transaction (:func:`report_in`):
nothing is reported that did not commit, and nothing committed goes unreported. Workers
send them (``tasks.webhooks``) under a lease, with the state machine of
``hub.services.leases``; every attempt is kept for ``GET /api/webhooks/{id}/deliveries/``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from hub.errors import InvalidInput, NotFound
from hub.ids import cursor_id, decode_cursor, encode_cursor
from hub.records import WebhookAttemptRecord, WebhookDeliveryRecord, WebhookRecord
from hub.services.common import clamp_limit, is_postgresql, iso_utc
from hub.services.leases import (
    PENDING,
    QUEUED,
    SENDING,
    claim_values,
    claimable,
    held_by,
    outcome_values,
)
from hub.webhook_urls import RefusedUrl, check_shape

EVENT_TYPES = (
    "notification.created",
    "notification.read",
    "email.sent",
    "email.failed",
    "push.failed",
    "message.created",
)
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks secret prefix, not a secret
# An endpoint removed before its deliveries were sent: they never will be.
CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    webhook: WebhookRecord
    secret: str  # shown once, at creation


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: list[WebhookDeliveryRecord]  # newest first
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class WebhookClaim:
    delivery_id: int
    attempt: int
    tenant_id: str
    endpoint_id: str
    message_id: str
    type: str
    payload: dict[str, Any]
    created_at: datetime
    url: str
    secret: str


def _record(row: WebhookEndpoint) -> WebhookRecord:
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "created_at": iso_utc(row.created_at),
    }


UrlCheck = Callable[[str], Awaitable[None]]


class WebhookService:
    """Endpoints (REST, service role) and the outbox writes every reporting change makes.
    Built once per process."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        check_url: UrlCheck,
        max_per_tenant: int,
    ) -> None:
        self.sessions = sessions
        # hub.webhook_urls.check_public, or only the shape when private receivers are
        # allowed (NOTIFYHUB_WEBHOOKS_ALLOW_PRIVATE).
        self.check_url = check_url
        self.max_per_tenant = max_per_tenant
        self._creating = asyncio.Lock()

    async def create(self, *, tenant_id: str, url: str, events: Sequence[str]) -> CreatedWebhook:
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if unknown or not events:
            raise InvalidInput(
                f"'events' must list some of {', '.join(EVENT_TYPES)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        try:
            check_shape(url)
            await self.check_url(url)
        except RefusedUrl as exc:
            raise InvalidInput(f"'url' {exc}") from None
        secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()
        row = WebhookEndpoint(
            id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            url=url,
            events=sorted(set(events)),
            secret=secret,
            created_at=datetime.now(UTC),
        )
        # Registrations of one tenant queue on a lock, so that a flood of them at once cannot
        # all count room under the limit before any of them is stored: the advisory lock for
        # processes sharing PostgreSQL, the process's own lock for SQLite (one process).
        async with self._creating, self.sessions() as session, session.begin():
            if is_postgresql(session):
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                    {"key": f"webhooks:{tenant_id}"},
                )
            count = await session.scalar(
                select(func.count())
                .select_from(WebhookEndpoint)
                .where(WebhookEndpoint.tenant_id == tenant_id)
            )
            if int(count or 0) >= self.max_per_tenant:
                raise InvalidInput(
                    f"a tenant has at most {self.max_per_tenant} webhooks "
                    "(NOTIFYHUB_WEBHOOKS_MAX_PER_TENANT)"
                )
            session.add(row)
        return CreatedWebhook(webhook=_record(row), secret=secret)

    async def of_tenant(self, *, tenant_id: str) -> list[WebhookRecord]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.tenant_id == tenant_id)
                .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
            )
            return [_record(row) for row in rows]

    async def delete(self, *, tenant_id: str, webhook_id: str) -> None:
        """Remove an endpoint; what it still had to receive is dropped with it."""
        async with self.sessions() as session, session.begin():
            removed = await session.execute(
                delete(WebhookEndpoint)
                .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == webhook_id)
                .returning(WebhookEndpoint.id)
            )
            if removed.first() is None:
                raise NotFound("webhook not found")
            await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.tenant_id == tenant_id,
                    WebhookDelivery.endpoint_id == webhook_id,
                    WebhookDelivery.status.in_(PENDING),
                )
                .values(status=CANCELLED, lease_until=None, next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )

    async def deliveries(
        self,
        *,
        tenant_id: str,
        webhook_id: str,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> DeliveryPage:
        """An endpoint's deliveries with every attempt, newest first; 404 for another
        tenant's endpoint."""
        size = clamp_limit(limit)
        async with self.sessions() as session:
            owned = await session.scalar(
                select(WebhookEndpoint.id).where(
                    WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == webhook_id
                )
            )
            if owned is None:
                raise NotFound("webhook not found")
            query = select(WebhookDelivery).where(
                WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.endpoint_id == webhook_id
            )
            if cursor:
                (below,) = decode_cursor(cursor, 1)
                query = query.where(WebhookDelivery.id < cursor_id(below))
            rows = list(
                await session.scalars(query.order_by(WebhookDelivery.id.desc()).limit(size + 1))
            )
            page = rows[:size]
            attempts: dict[int, list[WebhookAttemptRecord]] = {row.id: [] for row in page}
            if page:
                for attempt in await session.scalars(
                    select(WebhookAttempt)
                    .where(
                        WebhookAttempt.tenant_id == tenant_id,
                        WebhookAttempt.delivery_id.in_(list(attempts)),
                    )
                    .order_by(WebhookAttempt.id)
                ):
                    attempts[attempt.delivery_id].append(
                        {
                            "attempt": attempt.attempt,
                            "status_code": attempt.status_code,
                            "error": attempt.error,
                            "at": iso_utc(attempt.at),
                        }
                    )
        items: list[WebhookDeliveryRecord] = [
            {
                "id": str(row.id),
                "message_id": row.message_id,
                "type": row.type,
                "status": row.status,
                "attempts": attempts[row.id],
                "created_at": iso_utc(row.created_at),
                "updated_at": iso_utc(row.updated_at),
            }
            for row in page
        ]
        next_cursor = encode_cursor(page[-1].id) if len(rows) > size else None
        return DeliveryPage(items=items, next_cursor=next_cursor)


async def subscribed_endpoints(
    session: AsyncSession, type: str, tenants: Iterable[str]
) -> dict[str, list[str]]:
    """The endpoints of ``tenants`` subscribed to ``type``, by tenant: one statement."""
    wanted = set(tenants)
    subscribed: dict[str, list[str]] = {}
    if not wanted:
        return subscribed
    for tenant_id, endpoint_id, events in await session.execute(
        select(WebhookEndpoint.tenant_id, WebhookEndpoint.id, WebhookEndpoint.events).where(
            WebhookEndpoint.tenant_id.in_(wanted)
        )
    ):
        if type in events:
            subscribed.setdefault(tenant_id, []).append(endpoint_id)
    return subscribed


async def report_in(
    session: AsyncSession,
    type: str,
    items: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    subscribed: dict[str, list[str]] | None = None,
) -> int:
    """One delivery per (``(tenant_id, data)`` item, endpoint of that tenant subscribed
    to ``type``), in the caller's transaction: one read for the whole batch (none when the
    caller read ``subscribed`` with :func:`subscribed_endpoints` already), and one insert
    when anything is subscribed. How many."""
    if not items:
        return 0
    if subscribed is None:
        subscribed = await subscribed_endpoints(session, type, (tenant for tenant, _ in items))
    if not subscribed:
        return 0
    now = datetime.now(UTC)
    timestamp = iso_utc(now)
    rows = [
        {
            "tenant_id": tenant_id,
            "endpoint_id": endpoint_id,
            "message_id": "msg_" + uuid.uuid4().hex,
            "type": type,
            "payload": {"type": type, "timestamp": timestamp, "data": data},
            "status": QUEUED,
            "attempts": 0,
            "next_attempt_at": now,  # the sweepers send it at once
            "created_at": now,
            "updated_at": now,
        }
        for tenant_id, data in items
        for endpoint_id in subscribed.get(tenant_id, ())
    ]
    if rows:
        await session.execute(insert(WebhookDelivery), rows)
    return len(rows)


# -- the workers' side -------------------------------------------------------------------------


async def claim_due(
    *,
    sessions: async_sessionmaker[AsyncSession],
    limit: int,
    lease_seconds: float,
    per_endpoint: int,
) -> list[WebhookClaim]:
    """Take up to ``limit`` due deliveries, at most ``per_endpoint`` in flight for any one
    endpoint, so one slow or dead receiver holds a few of a worker's slots, never all.

    The pick reads without locks (a window function cannot be locked); the claiming
    UPDATE re-checks each row, so of two workers that picked the same row one claims it."""
    if limit <= 0:
        return []
    now = datetime.now(UTC)
    busy = (
        select(WebhookDelivery.endpoint_id, func.count().label("busy"))
        .where(WebhookDelivery.status == SENDING, WebhookDelivery.lease_until > now)
        .group_by(WebhookDelivery.endpoint_id)
        .subquery()
    )
    ranked = (
        select(
            WebhookDelivery.id,
            WebhookDelivery.next_attempt_at,
            (
                func.row_number().over(
                    partition_by=WebhookDelivery.endpoint_id,
                    order_by=WebhookDelivery.next_attempt_at,
                )
                + func.coalesce(busy.c.busy, 0)
            ).label("slot"),
        )
        .outerjoin(busy, busy.c.endpoint_id == WebhookDelivery.endpoint_id)
        # Pending and due: a sending row is due when its lease ran out (its worker died).
        .where(WebhookDelivery.status.in_(PENDING), WebhookDelivery.next_attempt_at <= now)
        .subquery()
    )
    async with sessions() as session, session.begin():
        picked = list(
            await session.scalars(
                select(ranked.c.id)
                .where(ranked.c.slot <= per_endpoint)
                .order_by(ranked.c.next_attempt_at)
                .limit(limit)
            )
        )
        if not picked:
            return []
        rows = (
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_(picked), claimable(WebhookDelivery, now))
                .values(**claim_values(WebhookDelivery, now, lease_seconds))
                .returning(
                    WebhookDelivery.id,
                    WebhookDelivery.attempts,
                    WebhookDelivery.tenant_id,
                    WebhookDelivery.endpoint_id,
                    WebhookDelivery.message_id,
                    WebhookDelivery.type,
                    WebhookDelivery.payload,
                    WebhookDelivery.created_at,
                )
                .execution_options(synchronize_session=False)
            )
        ).all()
        if not rows:
            return []
        endpoints = {
            endpoint.id: endpoint
            for endpoint in await session.scalars(
                select(WebhookEndpoint).where(
                    WebhookEndpoint.id.in_({row.endpoint_id for row in rows})
                )
            )
        }
    return [
        WebhookClaim(
            delivery_id=int(row.id),
            attempt=int(row.attempts),
            tenant_id=row.tenant_id,
            endpoint_id=row.endpoint_id,
            message_id=row.message_id,
            type=row.type,
            payload=dict(row.payload),
            created_at=row.created_at,
            url=endpoints[row.endpoint_id].url,
            secret=endpoints[row.endpoint_id].secret,
        )
        for row in rows
        # An endpoint deleted meanwhile cancelled its deliveries; a claim racing it is
        # dropped here and its row was cancelled by that transaction or is swept again.
        if row.endpoint_id in endpoints and endpoints[row.endpoint_id].tenant_id == row.tenant_id
    ]


async def finish(
    *,
    sessions: async_sessionmaker[AsyncSession],
    claim: WebhookClaim,
    status: str,
    status_code: int | None,
    error: str | None,
    retry_at: datetime | None = None,
) -> bool:
    """Record an attempt (always) and its outcome (while this attempt holds the delivery)."""
    now = datetime.now(UTC)
    values = outcome_values(status, now, retry_at)
    values["last_error"] = error[:2000] if error else None
    async with sessions() as session, session.begin():
        # A core INSERT: no ORM unit of work for a row nobody reads back here.
        await session.execute(
            insert(WebhookAttempt).values(
                tenant_id=claim.tenant_id,
                delivery_id=claim.delivery_id,
                attempt=claim.attempt,
                status_code=status_code,
                error=error[:2000] if error else None,
                at=now,
            )
        )
        recorded = await session.scalar(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == claim.delivery_id,
                held_by(WebhookDelivery, claim.attempt, status),
            )
            .values(**values)
            .returning(WebhookDelivery.id)
            .execution_options(synchronize_session=False)
        )
    return recorded is not None
