"""Inbox state changes (seen, read, unread, archived, unarchived, deleted) and the exact
unread/unseen counts they move.

The counter row of a user counts, among *all* its stored rows, expired or not:
``unread_count`` the rows with ``read_at IS NULL AND archived_at IS NULL``, ``unseen_count``
those with ``seen_at IS NULL AND archived_at IS NULL``. Every statement that changes such a
row moves the counter by exactly the rows it changed (``RETURNING`` says which, with the
columns that decide the direction), in the same transaction. Row locks make each statement
see and change a row at most once however many devices act at the same time, so the counter
never drifts; and every such transaction takes the counter row's lock before any
notification row's (:func:`lock_counter`), so they never deadlock. The count a client sees
subtracts the user's expired rows that the purge has not deleted yet: a range of the partial
index ``ix_notifications_expiring``, which holds few rows because the purge deletes expired
ones every few minutes (and moves the counter for them in its own transaction). See
docs/architecture.md, "Inbox counts".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Notification, NotificationCounter
from hub.services.common import is_postgresql


@dataclass(frozen=True, slots=True)
class Counts:
    unread: int
    unseen: int


@dataclass(frozen=True, slots=True)
class CounterMove:
    """How a statement moves a user's counters (negative: down)."""

    unread: int = 0
    unseen: int = 0


class Action(Enum):
    """The inbox actions of docs/protocol.md; each value is its REST path segment."""

    READ = "mark-as-read"
    SEEN = "mark-as-seen"
    UNREAD = "mark-as-unread"
    ARCHIVE = "archive"
    UNARCHIVE = "unarchive"
    DELETE = "delete"


def owned(tenant_id: str, user_id: str) -> Any:
    return and_(Notification.tenant_id == tenant_id, Notification.user_id == user_id)


def not_expired(now: datetime) -> Any:
    return or_(Notification.expires_at.is_(None), Notification.expires_at > now)


def _sum_where(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def counts(session: AsyncSession, tenant_id: str, user_id: str, now: datetime) -> Counts:
    """The user's exact unread and unseen counts: the counter less expired, unpurged rows."""
    counter = (
        await session.execute(
            select(NotificationCounter.unread_count, NotificationCounter.unseen_count).where(
                NotificationCounter.tenant_id == tenant_id,
                NotificationCounter.user_id == user_id,
            )
        )
    ).first()
    if counter is None:
        return Counts(0, 0)
    expired = (
        await session.execute(
            select(
                _sum_where(Notification.read_at.is_(None)),
                _sum_where(Notification.seen_at.is_(None)),
            ).where(
                owned(tenant_id, user_id),
                Notification.expires_at.is_not(None),
                Notification.expires_at <= now,
                Notification.archived_at.is_(None),
            )
        )
    ).one()
    return Counts(
        max(0, int(counter[0]) - int(expired[0])), max(0, int(counter[1]) - int(expired[1]))
    )


async def lock_counter(session: AsyncSession, tenant_id: str, user_id: str) -> None:
    """Take the user's counter row lock first, before any of its notification rows.

    Every transaction that changes a user's inbox (creates, these actions, the purge) takes
    its users' counter locks first, in (tenant, user) order: so they queue on that one
    row instead of locking notification rows in whatever order their plans scan them,
    which deadlocks two devices acting on the same items at once.
    """
    await session.execute(
        select(NotificationCounter.last_seq)
        .where(NotificationCounter.tenant_id == tenant_id, NotificationCounter.user_id == user_id)
        .with_for_update()
    )


async def move_counter(
    session: AsyncSession, tenant_id: str, user_id: str, move: CounterMove
) -> None:
    """Move one user's counters (never below zero) in the caller's transaction."""
    if move.unread == 0 and move.unseen == 0:
        return
    greatest = func.greatest if is_postgresql(session) else func.max
    await session.execute(
        update(NotificationCounter)
        .where(NotificationCounter.tenant_id == tenant_id, NotificationCounter.user_id == user_id)
        .values(
            unread_count=greatest(NotificationCounter.unread_count + move.unread, 0),
            unseen_count=greatest(NotificationCounter.unseen_count + move.unseen, 0),
        )
    )


def _live(column: Any) -> int:
    return 1 if column is None else 0


async def mark_seen(session: AsyncSession, target: Any, now: datetime) -> tuple[list[int], int]:
    """Set ``seen_at`` where unset; the ids changed and how many left the unseen count."""
    changed = await session.execute(
        update(Notification)
        .where(target, Notification.seen_at.is_(None))
        .values(seen_at=now)
        .returning(Notification.id, Notification.archived_at)
    )
    rows = changed.all()
    return sorted(int(row[0]) for row in rows), sum(_live(row[1]) for row in rows)


async def apply(
    session: AsyncSession, action: Action, target: Any, now: datetime
) -> tuple[list[int], CounterMove]:
    """Apply ``action`` to the rows ``target`` selects (the caller's own, not expired);
    return the ids it changed and how the counters move for exactly those rows."""
    n = Notification
    if action is Action.SEEN:
        ids, unseen = await mark_seen(session, target, now)
        return ids, CounterMove(unseen=-unseen)
    if action is Action.READ:
        # Reading implies seeing: unread rows not seen yet are seen now, then read.
        target = and_(target, n.read_at.is_(None))
        _, unseen = await mark_seen(session, target, now)
        read = await session.execute(
            update(n).where(target).values(read_at=now).returning(n.id, n.archived_at)
        )
        marked = read.all()
        unread = sum(_live(row[1]) for row in marked)
        return sorted(int(row[0]) for row in marked), CounterMove(unread=-unread, unseen=-unseen)
    if action is Action.DELETE:
        statement: Any = delete(n).where(target)
    elif action is Action.UNREAD:
        statement = update(n).where(target, n.read_at.is_not(None)).values(read_at=None)
    elif action is Action.ARCHIVE:
        statement = update(n).where(target, n.archived_at.is_(None)).values(archived_at=now)
    else:
        statement = update(n).where(target, n.archived_at.is_not(None)).values(archived_at=None)
    # The returned columns decide each row's effect: for updates, values after the change
    # (the WHERE clause fixed what they were before); for a delete, the deleted row.
    changed = await session.execute(statement.returning(n.id, n.read_at, n.seen_at, n.archived_at))
    rows = changed.all()
    ids = sorted(int(row[0]) for row in rows)
    if action is Action.UNREAD:
        return ids, CounterMove(unread=sum(_live(row[3]) for row in rows))
    if action is Action.UNARCHIVE:
        return ids, CounterMove(
            unread=sum(_live(row[1]) for row in rows), unseen=sum(_live(row[2]) for row in rows)
        )
    # Archived, or deleted while not archived: out of both counts if it was in them.
    counted = [row for row in rows if action is Action.ARCHIVE or row[3] is None]
    return ids, CounterMove(
        unread=-sum(_live(row[1]) for row in counted),
        unseen=-sum(_live(row[2]) for row in counted),
    )


def selection(
    tenant_id: str, user_id: str, action: Action, ids: Sequence[int] | None, now: datetime
) -> Any:
    """The rows an action may change: the caller's own, not expired, the given ``ids`` (or
    all; archiving all archives the read ones only)."""
    target = and_(owned(tenant_id, user_id), not_expired(now))
    if ids is not None:
        return and_(target, Notification.id.in_(ids))
    if action is Action.ARCHIVE:
        return and_(target, Notification.read_at.is_not(None))
    return target
