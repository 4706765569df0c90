"""Retention: the purge of expired notifications, of notifications older than the retention
(``NOTIFYHUB_RETENTION_DAYS``, or a tenant's shorter ``retention_days``) and of chat messages
older than a tenant's ``chat_retention_days``.

It must never stall live traffic, so it deletes in bounded batches (``purge_batch_rows``,
5,000 by default), each its own short transaction, with a pause between them at least as
long as the batch took (so at most half the time is spent purging); no statement
scans the table (the candidates come from the partial index on ``expires_at`` or the index
on ``created_at``). A batch locks the counter rows of the users it touches, in order, before
their notification rows, as every inbox change does, so it never deadlocks with them and
holds each user up for one batch at most; it moves those counters by exactly the counted
rows it deleted (see :mod:`hub.services.inbox`), so counts stay exact while it runs and after.
Chat batches pick their messages with ``FOR UPDATE SKIP LOCKED`` and take the conversations'
locks (those of sends and read receipts) before moving the members' unread counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Conversation, ConversationMember, Message, Notification, TenantSettings
from hub.metrics import PURGED_ROWS
from hub.services import inbox
from hub.services.common import is_postgresql
from hub.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 5000
DEFAULT_PAUSE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class PurgePolicy:
    retention_days: int
    batch_rows: int = DEFAULT_BATCH_ROWS
    pause_seconds: float = DEFAULT_PAUSE_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> PurgePolicy:
        return cls(
            retention_days=settings.retention_days,
            batch_rows=settings.purge_batch_rows,
            pause_seconds=settings.purge_pause_seconds,
        )


@dataclass(slots=True)
class PurgeReport:
    expired: int = 0
    retained: int = 0  # past the retention
    messages: int = 0
    batches: int = 0


UserKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Batch:
    candidates: int
    deleted: int  # fewer when someone deleted some of them meanwhile


class Purge:
    """One pass over everything due; :meth:`run` is what ``notifyhub purge`` and each tick
    of the worker's schedule call."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], policy: PurgePolicy) -> None:
        self._sessions = sessions
        self._policy = policy

    async def run(self, now: datetime | None = None) -> PurgeReport:
        now = now or datetime.now(UTC)
        report = PurgeReport()
        n = Notification
        expired = and_(n.expires_at.is_not(None), n.expires_at <= now)
        report.expired = await self._notifications(expired, "expired", report)
        cutoff = now - timedelta(days=self._policy.retention_days)
        report.retained = await self._notifications(n.created_at < cutoff, "retention", report)
        for tenant_id, days, chat_days in await self._tenant_rules():
            if days is not None and days < self._policy.retention_days:
                older = and_(n.tenant_id == tenant_id, n.created_at < now - timedelta(days=days))
                report.retained += await self._notifications(older, "retention", report)
            if chat_days is not None:
                report.messages += await self._messages(
                    tenant_id, now - timedelta(days=chat_days), report
                )
        log.info(
            "purge: %d expired, %d past retention, %d chat messages in %d batches",
            report.expired,
            report.retained,
            report.messages,
            report.batches,
        )
        return report

    async def run_every(self, interval_seconds: float) -> None:
        """Purge now and then every ``interval_seconds`` until cancelled; a failed pass (the
        database away) is logged and the next one tries again."""
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purge failed; trying again in %.0f s", interval_seconds)
            await asyncio.sleep(interval_seconds)

    async def _tenant_rules(self) -> list[tuple[str, int | None, int | None]]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(
                    TenantSettings.tenant_id,
                    TenantSettings.retention_days,
                    TenantSettings.chat_retention_days,
                )
            )
            return [(row[0], row[1], row[2]) for row in rows]

    async def _notifications(self, condition: Any, kind: str, report: PurgeReport) -> int:
        total = 0
        while True:
            started = time.monotonic()
            async with self._sessions() as session, session.begin():
                done = await self._notification_batch(session, condition)
            total += done.deleted
            report.batches += 1
            PURGED_ROWS.labels(f"notifications_{kind}").inc(done.deleted)
            if done.candidates < self._policy.batch_rows:
                return total
            await self._pause(time.monotonic() - started)

    async def _notification_batch(self, session: AsyncSession, condition: Any) -> Batch:
        n = Notification
        candidates = (
            await session.execute(
                select(n.id, n.tenant_id, n.user_id).where(condition).limit(self._policy.batch_rows)
            )
        ).all()
        if not candidates:
            return Batch(0, 0)
        # Counter rows first, in (tenant, user) order, like every inbox change (see
        # hub.services.inbox.lock_counter): then no one holds these users' rows, and the
        # state each deleted row had (RETURNING, the condition checked again) is final.
        await _lock_counters(session, sorted({(row[1], row[2]) for row in candidates}))
        deleted = await session.execute(
            delete(n)
            .where(n.id.in_([int(row[0]) for row in candidates]), condition)
            .returning(n.tenant_id, n.user_id, n.read_at, n.seen_at, n.archived_at)
        )
        rows = deleted.all()
        await _move_counters(session, _counter_moves(rows))
        return Batch(len(candidates), len(rows))

    async def _messages(self, tenant_id: str, cutoff: datetime, report: PurgeReport) -> int:
        total = 0
        while True:
            started = time.monotonic()
            async with self._sessions() as session, session.begin():
                deleted = await _delete_messages(session, tenant_id, cutoff, self._policy)
            total += deleted
            report.batches += 1
            PURGED_ROWS.labels("messages").inc(deleted)
            if deleted < self._policy.batch_rows:
                return total
            await self._pause(time.monotonic() - started)

    async def _pause(self, batch_seconds: float) -> None:
        """At least the configured pause, and at least as long as the batch took: the purge
        keeps the database busy half the time at most, whatever its speed, and live
        requests get the other half."""
        await asyncio.sleep(max(self._policy.pause_seconds, batch_seconds))


def _counter_moves(rows: Sequence[Any]) -> dict[UserKey, inbox.CounterMove]:
    """How each user's counters move for its deleted rows: only rows they counted (not
    archived; unread, unseen)."""
    unread: dict[UserKey, int] = defaultdict(int)
    unseen: dict[UserKey, int] = defaultdict(int)
    for tenant_id, user_id, read_at, seen_at, archived_at in rows:
        if archived_at is None:
            unread[(tenant_id, user_id)] += read_at is None
            unseen[(tenant_id, user_id)] += seen_at is None
    return {
        key: inbox.CounterMove(unread=-unread[key], unseen=-unseen[key])
        for key in sorted(unread)
        if unread[key] or unseen[key]
    }


_PG_LOCK_COUNTERS = text(
    """
    SELECT 1 FROM notification_counters AS c
    JOIN unnest(CAST(:tenant_ids AS text[]), CAST(:user_ids AS text[])) AS k(tenant_id, user_id)
      ON c.tenant_id = k.tenant_id AND c.user_id = k.user_id
    ORDER BY c.tenant_id, c.user_id
    FOR UPDATE OF c
    """
)
_PG_MOVE_COUNTERS = text(
    """
    UPDATE notification_counters AS c
    SET unread_count = greatest(c.unread_count + d.unread, 0),
        unseen_count = greatest(c.unseen_count + d.unseen, 0)
    FROM unnest(CAST(:tenant_ids AS text[]), CAST(:user_ids AS text[]),
                CAST(:unread AS bigint[]), CAST(:unseen AS bigint[]))
         AS d(tenant_id, user_id, unread, unseen)
    WHERE c.tenant_id = d.tenant_id AND c.user_id = d.user_id
    """
)


async def _lock_counters(session: AsyncSession, keys: Sequence[UserKey]) -> None:
    """Lock these users' counter rows in (tenant, user) order: the order creators lock them
    in, so a purge and a multi-recipient create never deadlock. (SQLite has one writer at a
    time: nothing to lock.)"""
    if is_postgresql(session):
        await session.execute(
            _PG_LOCK_COUNTERS,
            {"tenant_ids": [t for t, _ in keys], "user_ids": [u for _, u in keys]},
        )


async def _move_counters(session: AsyncSession, moves: dict[UserKey, inbox.CounterMove]) -> None:
    if not moves:
        return
    if not is_postgresql(session):
        for (tenant_id, user_id), move in moves.items():
            await inbox.move_counter(session, tenant_id, user_id, move)
        return
    keys = sorted(moves)
    tenants = [tenant for tenant, _ in keys]
    users = [user for _, user in keys]
    await session.execute(
        _PG_MOVE_COUNTERS,
        {
            "tenant_ids": tenants,
            "user_ids": users,
            "unread": [moves[key].unread for key in keys],
            "unseen": [moves[key].unseen for key in keys],
        },
    )


async def _delete_messages(
    session: AsyncSession, tenant_id: str, cutoff: datetime, policy: PurgePolicy
) -> int:
    """One batch of a tenant's messages older than ``cutoff``; each reader's unread count
    loses the deleted messages it still counted (from the peer, after its read pointer)."""
    m = Message
    candidates = (
        await session.execute(
            select(m.id, m.conversation_id)
            .where(m.tenant_id == tenant_id, m.created_at < cutoff)
            .limit(policy.batch_rows)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not candidates:
        return 0
    # The lock sends and read receipts take, in id order: while it is held nobody counts
    # these conversations' unread messages, so the counts moved below stay exact.
    await session.execute(
        select(Conversation.id)
        .where(
            Conversation.tenant_id == tenant_id,
            Conversation.id.in_(sorted({int(row[1]) for row in candidates})),
        )
        .order_by(Conversation.id)
        .with_for_update()
    )
    deleted = (
        await session.execute(
            delete(m)
            .where(m.id.in_([int(row[0]) for row in candidates]))
            .returning(m.conversation_id, m.seq, m.sender_id)
        )
    ).all()
    by_conversation: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for conversation_id, seq, sender_id in deleted:
        by_conversation[int(conversation_id)].append((int(seq), sender_id))
    member = ConversationMember
    members = await session.execute(
        select(member.conversation_id, member.user_id, member.last_read_seq).where(
            member.tenant_id == tenant_id, member.conversation_id.in_(by_conversation)
        )
    )
    for conversation_id, user_id, last_read_seq in members.all():
        unread = sum(
            1
            for seq, sender in by_conversation[int(conversation_id)]
            if sender != user_id and seq > last_read_seq
        )
        if unread:
            await session.execute(
                update(member)
                .where(
                    tuple_(member.tenant_id, member.conversation_id, member.user_id)
                    == (tenant_id, conversation_id, user_id)
                )
                .values(unread_count=member.unread_count - unread)
            )
    return len(deleted)
