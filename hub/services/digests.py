"""Digest windows: events of one (tenant, user, key) gathered for ``window_seconds`` from
the first one into one in-app notification, updated in place, and one email when the
window closes.

The window is one row per key in ``digest_windows``, locked (``FOR UPDATE``) by every
transaction that gathers an event into it and by the scheduler that closes it, so an event
either joins the open window or, once its time is up, closes it and opens the next: never
both, never lost. A window outlives any process: whichever scheduler runs when it is due
closes it, once, in the transaction that records its email.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import DigestWindow
from hub.rules import NewNotification
from hub.services.common import insert_for
from hub.services.emails import as_utc
from hub.services.notifications import NotificationWrites

OPEN, CLOSED = "open", "closed"
# The newest events a digest shows (``count`` counts them all).
MAX_ITEMS = 50

WindowKey = tuple[str, str, str]  # (tenant_id, user_id, key)


@dataclass(frozen=True, slots=True)
class Gather:
    """One event for one recipient, to gather under ``key``."""

    tenant_id: str
    user_id: str
    key: str
    window_seconds: int
    # What the digest lists of this event (its notification part and event id).
    item: dict[str, Any]
    # The in-app notification a new window starts from (None: the event has none).
    content: NewNotification | None
    # The email to send when the window closes: to_email, template_key, subject, context,
    # category (None: this event asks for none).
    email: dict[str, Any] | None

    @property
    def window(self) -> WindowKey:
        return (self.tenant_id, self.user_id, self.key)


@dataclass(frozen=True, slots=True)
class Closed:
    """A window that closed: what its email needs."""

    tenant_id: str
    user_id: str
    key: str
    opened_at: datetime
    count: int
    events: list[dict[str, Any]]
    email: dict[str, Any] | None
    notification_id: int | None  # the window's in-app notification (None: not in the app)


@dataclass(slots=True)
class _Window:
    status: str
    opened_at: datetime
    closes_at: datetime
    notification_id: int | None
    count: int
    events: list[dict[str, Any]]
    email: dict[str, Any] | None
    # The first event's notification, when this transaction opened the window.
    content: NewNotification | None = None
    opened_here: bool = False


def digest_data(key: str, count: int, events: list[dict[str, Any]]) -> dict[str, Any]:
    """``data.digest`` of the window's notification."""
    return {"key": key, "count": count, "events": events}


@dataclass(slots=True)
class Plan:
    """The windows a transaction gathers into, locked: the notifications it must add for
    the windows it opens (``new``, to store in the transaction's one ``writes.add``, so
    that counter rows are locked in one sorted pass), and the windows it closed."""

    windows: dict[WindowKey, _Window]
    new: list[tuple[WindowKey, NewNotification]]
    closed: list[Closed]

    @property
    def new_items(self) -> list[tuple[str, str, NewNotification]]:
        return [(tenant_id, user_id, content) for (tenant_id, user_id, _), content in self.new]

    async def finish(self, writes: NotificationWrites, ids: Sequence[int | None]) -> None:
        """Write the windows back, given the ids ``writes.add`` gave :attr:`new_items`
        (None: the user does not want it in the app), and update the notifications of the
        windows that gathered more."""
        for (key, _), notification_id in zip(self.new, ids, strict=True):
            self.windows[key].notification_id = notification_id
        for (tenant_id, user_id, digest_key), window in self.windows.items():
            if not window.opened_here and window.notification_id is not None:
                change = {"digest": digest_data(digest_key, window.count, window.events)}
                if not await writes.replace_data(
                    tenant_id, user_id, window.notification_id, change
                ):
                    window.notification_id = None  # the user deleted it: the window goes on
        for key, window in self.windows.items():
            await _save(writes.session, key, window)


async def plan_in(session: AsyncSession, items: Sequence[Gather], now: datetime) -> Plan:
    """Gather ``items`` (in event order) in the caller's transaction: each joins its key's
    open window, or opens one (whose in-app notification is to be added); the windows
    whose time was up are closed first (returned for their emails). Windows are locked in
    one sorted order, before any counter row, so concurrent batches never deadlock."""
    if not items:
        return Plan({}, [], [])
    keys = sorted({item.window for item in items})
    windows = await _lock(session, keys, now)
    closed: list[Closed] = []
    for key in keys:
        window = windows[key]
        if window.status == OPEN and window.closes_at <= now:
            closed.append(_closed(key, window))
            window.status = CLOSED
    for item in items:
        window = windows[item.window]
        if window.status != OPEN:
            window.status = OPEN
            window.opened_at = now
            window.closes_at = now + timedelta(seconds=item.window_seconds)
            window.notification_id = None
            window.count = 0
            window.events = []
            window.email = None
            window.content = item.content
            window.opened_here = True
        window.count += 1
        window.events = [item.item, *window.events][:MAX_ITEMS]
        window.email = item.email or window.email
    new: list[tuple[WindowKey, NewNotification]] = []
    for key, window in windows.items():
        if window.content is not None:
            data = {
                **(window.content.data or {}),
                "digest": digest_data(key[2], window.count, window.events),
            }
            new.append((key, replace(window.content, data=data)))
    return Plan(windows, new, closed)


async def _lock(
    session: AsyncSession, keys: list[WindowKey], now: datetime
) -> dict[WindowKey, _Window]:
    """Every key's row, locked (created closed where there was none)."""
    await session.execute(
        insert_for(session)(DigestWindow).on_conflict_do_nothing(),
        [
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "key": key,
                "status": CLOSED,
                "opened_at": now,
                "closes_at": now,
                "count": 0,
                "events": [],
            }
            for tenant_id, user_id, key in keys
        ],
    )
    rows = await session.execute(
        select(DigestWindow)
        .where(tuple_(DigestWindow.tenant_id, DigestWindow.user_id, DigestWindow.key).in_(keys))
        .order_by(DigestWindow.tenant_id, DigestWindow.user_id, DigestWindow.key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {
        (row.tenant_id, row.user_id, row.key): _Window(
            status=row.status,
            opened_at=as_utc(row.opened_at),
            closes_at=as_utc(row.closes_at),
            notification_id=row.notification_id,
            count=row.count,
            events=list(row.events or []),
            email=row.email,
        )
        for row in rows.scalars()
    }


async def _save(session: AsyncSession, key: WindowKey, window: _Window) -> None:
    tenant_id, user_id, digest_key = key
    await session.execute(
        update(DigestWindow)
        .where(
            DigestWindow.tenant_id == tenant_id,
            DigestWindow.user_id == user_id,
            DigestWindow.key == digest_key,
        )
        .values(
            status=window.status,
            opened_at=window.opened_at,
            closes_at=window.closes_at,
            notification_id=window.notification_id,
            count=window.count,
            events=window.events,
            email=window.email,
        )
        .execution_options(synchronize_session=False)
    )


def _closed(key: WindowKey, window: _Window) -> Closed:
    tenant_id, user_id, digest_key = key
    return Closed(
        tenant_id=tenant_id,
        user_id=user_id,
        key=digest_key,
        opened_at=window.opened_at,
        count=window.count,
        events=window.events,
        email=window.email,
        notification_id=window.notification_id,
    )


async def close_due(session: AsyncSession, now: datetime, limit: int) -> list[Closed]:
    """Close up to ``limit`` windows whose time is up, in the caller's transaction (which
    records their emails); ``SKIP LOCKED`` lets several schedulers split them."""
    if limit <= 0:
        return []
    columns = (DigestWindow.tenant_id, DigestWindow.user_id, DigestWindow.key)
    due = (
        select(*columns)
        .where(DigestWindow.status == OPEN, DigestWindow.closes_at <= now)
        .order_by(DigestWindow.closes_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    rows = await session.execute(
        update(DigestWindow)
        .where(tuple_(*columns).in_(select(due.c.tenant_id, due.c.user_id, due.c.key)))
        .values(status=CLOSED, closed_at=now)
        .returning(
            *columns,
            DigestWindow.opened_at,
            DigestWindow.count,
            DigestWindow.events,
            DigestWindow.email,
            DigestWindow.notification_id,
        )
        .execution_options(synchronize_session=False)
    )
    return [
        Closed(
            tenant_id=row.tenant_id,
            user_id=row.user_id,
            key=row.key,
            opened_at=as_utc(row.opened_at),
            count=int(row[4]),
            events=list(row.events or []),
            email=row.email,
            notification_id=row.notification_id,
        )
        for row in rows
    ]
