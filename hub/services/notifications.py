"""In-app notifications: create for many recipients, list, count, mark read.

REST, the ``/notifications`` namespace, the legacy WebSocket and event intake all go through
one :class:`NotificationService`. Live delivery happens after the transaction commits,
through the notification bus, which every node listens to.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Notification, NotificationCounter, NotificationRequest
from hub.delivery.bus import NotificationBus
from hub.delivery.notifications import READ_EVENT, UPDATED_EVENT
from hub.errors import InvalidInput, NotFound, Unavailable
from hub.ids import bad_cursor, cursor_id, decode_cursor, encode_cursor, parse_id
from hub.records import DeliveryRecord, NotificationRecord
from hub.rules import NewNotification, NotificationLimits, check_expiry, check_limits
from hub.services import inbox
from hub.services.common import (
    USER_KEYS_TABLES,
    clamp_limit,
    dialect_of,
    insert_for,
    is_postgresql,
    iso_utc,
    user_keys_param,
)
from hub.services.emails import email_deliveries_of
from hub.services.group_commit import GroupCommit, Sized
from hub.services.preferences import PreferenceBook
from hub.services.pushes import DevicesByUser, PushService
from hub.services.webhooks import report_in, subscribed_endpoints

log = logging.getLogger(__name__)

_CURSOR_PREFIX = "n1:"


@dataclass(frozen=True, slots=True)
class CreateResult:
    ids: list[str]
    created: bool  # False when the idempotency key had been seen: nothing new was stored
    # Recipients who got nothing: in_app is off for them for the notification's category.
    suppressed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """One ``POST /api/notifications/``, checked, waiting for its transaction."""

    tenant_id: str
    recipients: list[str]  # unique, sorted
    notification: NewNotification
    idempotency_key: str | None


# The rows one gathered transaction writes at most (a single larger request goes alone): big
# enough to take a burst of creates at once, small enough that a transaction stays short.
_GROUP_COMMIT_MAX_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class Page:
    items: list[NotificationRecord]
    next_cursor: str | None
    counts: inbox.Counts


NOTIFICATIONS = Notification.__table__


def serialize(row: Mapping[Any, Any], *, created_at: str | None = None) -> NotificationRecord:
    """The notification object (docs/protocol.md 5.1) from a row mapping (``created_at``
    pre-formatted when a whole batch shares it)."""
    read_at = row["read_at"]
    return {
        "id": str(row["id"]),
        "tenant_id": row["tenant_id"],
        "user_id": row["user_id"],
        "seq": row["seq"],
        "category": row["category"],
        "title": row["title"],
        "body": row["body"],
        "data": row["data"] or {},
        "link": row["link"],
        "created_at": created_at or iso_utc(row["created_at"]),
        "read_at": iso_utc(read_at) if read_at is not None else None,
        "seen_at": _iso_or_none(row.get("seen_at")),
        "archived_at": _iso_or_none(row.get("archived_at")),
        "expires_at": _iso_or_none(row.get("expires_at")),
    }


def _iso_or_none(moment: datetime | None) -> str | None:
    return iso_utc(moment) if moment is not None else None


async def publish_created(bus: NotificationBus, created: Sequence[NotificationRecord]) -> None:
    """Live delivery of committed notifications; a bus outage loses nothing stored."""
    now = datetime.now(UTC)
    # An event that waited in a queue past its expiry is stored (and so applied once) but
    # never shown.
    created = [item for item in created if not _expired(item, now)]
    try:
        await bus.publish_new(created)
    except Unavailable:
        # Stored is what counts: every node's lag check finds them within two checks and
        # delivers them to the users' connected sockets (or a reconnect replays them).
        log.warning("%d notifications stored but not published live", len(created))


# PostgreSQL: the whole store in one statement with constant SQL text (N only in the JSON
# parameters; a multi-row VALUES is compiled anew for every N and costs far more than the
# database work at 1,000 recipients). Each recipient's counter moves by its number of
# notifications under the row's lock, taken in (tenant, user) order so that concurrent
# batches never deadlock; its seqs are handed out in input order; the ids (drawn from the
# table's sequence) and seqs come back as two arrays in input order. One round trip: the
# locks are held for as short a time as can be.
_PG_STORE = text(
    """
    WITH input AS (
        SELECT r.ordinality AS o, r.value ->> 0 AS t, r.value ->> 1 AS u,
               CAST(r.value ->> 2 AS int) AS c
        FROM jsonb_array_elements(CAST(:recipients AS jsonb)) WITH ORDINALITY AS r
    ),
    counts AS (
        SELECT t, u, count(*) AS n FROM input GROUP BY t, u
    ),
    allocated AS (
        INSERT INTO notification_counters AS nc
            (tenant_id, user_id, last_seq, unread_count, unseen_count)
        SELECT t, u, n, n, n FROM counts ORDER BY t, u
        ON CONFLICT (tenant_id, user_id) DO UPDATE
            SET last_seq = nc.last_seq + EXCLUDED.last_seq,
                unread_count = nc.unread_count + EXCLUDED.unread_count,
                unseen_count = nc.unseen_count + EXCLUDED.unseen_count
        RETURNING tenant_id, user_id, last_seq
    ),
    numbered AS (
        SELECT i.o, i.t, i.u, i.c,
               a.last_seq - k.n + row_number() OVER (PARTITION BY i.t, i.u ORDER BY i.o) AS seq,
               nextval('notifications_id_seq') AS id
        FROM input AS i
        JOIN counts AS k ON k.t = i.t AND k.u = i.u
        JOIN allocated AS a ON a.tenant_id = i.t AND a.user_id = i.u
    ),
    contents AS (
        SELECT * FROM jsonb_to_recordset(CAST(:contents AS jsonb)) AS x(
            i int, category text, title text, body text, data jsonb, link text,
            expires_at timestamptz)
    ),
    inserted AS (
        INSERT INTO notifications (id, tenant_id, user_id, seq, category, title, body, data,
                                   link, created_at, expires_at)
        SELECT n.id, n.t, n.u, n.seq, c.category, c.title, c.body, c.data, c.link,
               :created_at, c.expires_at
        FROM numbered AS n JOIN contents AS c ON c.i = n.c
    )
    -- Not read from "inserted": a data-modifying WITH runs to completion anyway, and its
    -- ids were drawn in "numbered" (a join back would be planned as a nested loop).
    SELECT array_agg(id ORDER BY o), array_agg(seq ORDER BY o) FROM numbered
    """
)
Recipient = tuple[str, str]  # (tenant_id, user_id)


async def store_notifications(
    session: AsyncSession, items: Sequence[tuple[str, str, NewNotification]]
) -> list[NotificationRecord]:
    """Insert notifications (any tenants, users and contents) inside the caller's
    transaction; returns the notification objects in the order of ``items``.

    A user may appear several times (several events in one batch): its counter row moves
    by the count at once and the seqs are handed out in ``items`` order.
    """
    now = datetime.now(UTC)
    if is_postgresql(session):
        return await _store_postgresql(session, items, now)
    counts: dict[Recipient, int] = {}
    for tenant_id, user_id, _ in items:
        counts[(tenant_id, user_id)] = counts.get((tenant_id, user_id), 0) + 1
    last_seqs = await _allocate_seqs(session, counts)
    next_seq = {key: last_seqs[key] - count + 1 for key, count in counts.items()}
    rows: list[dict[str, Any]] = []
    for tenant_id, user_id, notification in items:
        seq = next_seq[(tenant_id, user_id)]
        next_seq[(tenant_id, user_id)] = seq + 1
        rows.append(
            {
                "tenant_id": tenant_id,
                "user_id": user_id,
                "seq": seq,
                "category": notification.category,
                "title": notification.title,
                "body": notification.body,
                "data": notification.data or {},
                "link": notification.link,
                "created_at": now,
                "read_at": None,
                "expires_at": notification.expiry(now),
            }
        )
    inserted = await session.execute(
        sqlite.insert(Notification).returning(Notification.id, sort_by_parameter_order=True), rows
    )
    created_at = iso_utc(now)  # one timestamp for the whole batch: format it once
    return [
        serialize({"id": i, **row}, created_at=created_at)
        for i, row in zip(inserted.scalars(), rows, strict=True)
    ]


async def _store_postgresql(
    session: AsyncSession, items: Sequence[tuple[str, str, NewNotification]], now: datetime
) -> list[NotificationRecord]:
    """One statement (:data:`_PG_STORE`): the recipients and the distinct contents travel
    as two JSON documents (a request's 1,000 recipients share one content), the ids and
    seqs come back as two arrays in ``items`` order."""
    content_index: dict[int, int] = {}  # id(content) -> its index in ``contents``
    contents: list[dict[str, Any]] = []
    recipients: list[tuple[str, str, int]] = []
    for tenant_id, user_id, content in items:
        index = content_index.get(id(content))
        if index is None:
            index = content_index[id(content)] = len(contents)
            contents.append(
                {
                    "i": index,
                    "category": content.category,
                    "title": content.title,
                    "body": content.body,
                    "data": content.data or {},
                    "link": content.link,
                    "expires_at": content.expiry(now),
                }
            )
        recipients.append((tenant_id, user_id, index))
    ids, seqs = (
        await session.execute(
            _PG_STORE,
            {
                "recipients": orjson.dumps(recipients).decode(),
                "contents": orjson.dumps(contents).decode(),
                "created_at": now,
            },
        )
    ).one()
    created_at = iso_utc(now)  # one timestamp for the whole batch: format it once
    expires = [None if c["expires_at"] is None else iso_utc(c["expires_at"]) for c in contents]
    return [
        {
            "id": str(notification_id),
            "tenant_id": tenant_id,
            "user_id": user_id,
            "seq": seq,
            "category": contents[index]["category"],
            "title": contents[index]["title"],
            "body": contents[index]["body"],
            "data": contents[index]["data"],
            "link": contents[index]["link"],
            "created_at": created_at,
            "read_at": None,
            "seen_at": None,
            "archived_at": None,
            "expires_at": expires[index],
        }
        for (tenant_id, user_id, index), notification_id, seq in zip(
            recipients, ids, seqs, strict=True
        )
    ]


async def _allocate_seqs(
    session: AsyncSession, counts: dict[Recipient, int]
) -> dict[Recipient, int]:
    """SQLite: move each recipient's counter by its count (and unread with it), in one sorted
    order; returns the new ``last_seq`` of each."""
    last: dict[Recipient, int] = {}
    for tenant, user in sorted(counts):
        count = counts[(tenant, user)]
        seq = await session.scalar(
            sqlite.insert(NotificationCounter)
            .values(
                tenant_id=tenant,
                user_id=user,
                last_seq=count,
                unread_count=count,
                unseen_count=count,
            )
            .on_conflict_do_update(
                index_elements=["tenant_id", "user_id"],
                set_={
                    "last_seq": NotificationCounter.last_seq + count,
                    "unread_count": NotificationCounter.unread_count + count,
                    "unseen_count": NotificationCounter.unseen_count + count,
                },
            )
            .returning(NotificationCounter.last_seq)
        )
        last[(tenant, user)] = int(seq or 0)
    return last


def _seq_cursor(seq: int) -> str:
    return encode_cursor(seq, prefix=_CURSOR_PREFIX)


def _seq_below(cursor: str) -> int:
    """The seq a cursor points below; anything not made by :func:`_seq_cursor` is a 400."""
    (digits,) = decode_cursor(cursor, 1, prefix=_CURSOR_PREFIX)
    seq = cursor_id(digits)
    if seq < 1:
        raise bad_cursor()
    return seq


def _owned(tenant_id: str, user_id: str) -> Any:
    return and_(Notification.tenant_id == tenant_id, Notification.user_id == user_id)


async def notifications_after(
    *, session: AsyncSession, tenant_id: str, user_id: str, after_seq: int, limit: int
) -> list[NotificationRecord]:
    """Oldest first from ``after_seq`` (exclusive): the replay of a reconnecting client."""
    rows = await session.execute(
        select(NOTIFICATIONS)
        .where(_owned(tenant_id, user_id), Notification.seq > after_seq)
        .order_by(Notification.seq)
        .limit(limit)
    )
    return [serialize(row) for row in rows.mappings()]


async def replay_page(
    session: AsyncSession, tenant_id: str, user_id: str, after_seq: int, limit: int
) -> list[tuple[int, str | None]]:
    """``(seq, encoded notification)`` pairs for live delivery's catch-up; an expired one is
    ``(seq, None)``: not sent, but the client is past it."""
    items = await notifications_after(
        session=session, tenant_id=tenant_id, user_id=user_id, after_seq=after_seq, limit=limit
    )
    now = datetime.now(UTC)
    return [
        (item["seq"], None if _expired(item, now) else orjson.dumps(item).decode())
        for item in items
    ]


def _expired(item: NotificationRecord, now: datetime) -> bool:
    expires_at = item["expires_at"]
    return expires_at is not None and datetime.fromisoformat(expires_at) <= now


async def latest_seqs(
    session: AsyncSession, users: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The latest ``seq`` stored for each of ``users`` (those with any): what live delivery
    compares with what it sent, to find notifications whose bus message never came."""
    if not users:
        return {}
    # Constant SQL text: a 500-pair IN list is compiled anew on every call, and every node
    # runs this for all its users every few seconds.
    rows = await session.execute(_LATEST_SEQS[dialect_of(session)], user_keys_param(users))
    return {(tenant_id, user_id): int(seq) for tenant_id, user_id, seq in rows}


_LATEST_SEQS = {
    dialect: text(
        "SELECT c.tenant_id, c.user_id, c.last_seq FROM notification_counters AS c "  # noqa: S608
        f"JOIN {keys} AS k ON c.tenant_id = k.tenant_id AND c.user_id = k.user_id"
    )
    for dialect, keys in USER_KEYS_TABLES.items()
}


def _parse_ids(ids: Sequence[object]) -> list[int]:
    # Ids are strings in the API. Anything that is not one of ours cannot match a row, so it
    # is ignored (never reported back: that would reveal which ids exist).
    return [parsed for value in ids if (parsed := parse_id(value)) is not None]


@dataclass(slots=True)
class NotificationWrites:
    """The notifications one transaction stores; :meth:`NotificationService.writing` publishes
    them live once it has committed (and never if it rolled back).

    Every notification goes through :meth:`add`, which stores it only for recipients whose
    preferences want ``in_app`` for its category; the others are ``suppressed``. The
    preferences are read in the same transaction, one statement for the whole batch
    (:meth:`read_preferences` up front, or :meth:`add` for what was not read yet).
    """

    session: AsyncSession
    # Push deliveries are recorded with the notifications (None: no push).
    pushes: PushService | None = None
    created: list[NotificationRecord] = field(default_factory=list)
    suppressed: list[Recipient] = field(default_factory=list)
    preferences: PreferenceBook = field(default_factory=PreferenceBook)
    # Read before the seqs are allocated (see :meth:`_read_targets`).
    devices: DevicesByUser = field(default_factory=dict)
    subscribed: dict[str, list[str]] = field(default_factory=dict)
    _users_read: set[Recipient] = field(default_factory=set)
    _tenants_read: set[str] = field(default_factory=set)
    # (tenant_id, user_id, notification id, new data): emitted as notification:updated.
    updated: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)

    async def read_preferences(self, recipients: Iterable[Recipient]) -> None:
        """Read the preferences of a batch's recipients at once, before deciding for each
        (a batch that also makes emails decides them from the same read)."""
        await self.preferences.read(self.session, recipients)

    def wants(self, tenant_id: str, user_id: str, category: str | None, channel: str) -> bool:
        """Whether a recipient whose preferences were read wants ``channel`` for ``category``."""
        return self.preferences.wants(tenant_id, user_id, category, channel)

    async def add(
        self, items: Sequence[tuple[str, str, NewNotification]]
    ) -> list[NotificationRecord]:
        """Store ``(tenant_id, user_id, content)`` items for the recipients who want them in
        the app; their records in ``items`` order (the others are added to ``suppressed``)."""
        ((records, _),) = await self.add_groups([items])
        return records

    async def add_groups(
        self, groups: Sequence[Sequence[tuple[str, str, NewNotification]]]
    ) -> list[tuple[list[NotificationRecord], list[Recipient]]]:
        """:meth:`add` for several requests at once (one preference read, one ``seq``
        allocation, one insert): each group's stored records and suppressed recipients."""
        await self.read_preferences(
            (tenant_id, user_id) for items in groups for tenant_id, user_id, _ in items
        )
        wanted: list[tuple[str, str, NewNotification]] = []
        split: list[tuple[int, list[Recipient]]] = []  # (stored count, suppressed) per group
        for items in groups:
            stored, suppressed = 0, []
            for tenant_id, user_id, content in items:
                if self.wants(tenant_id, user_id, content.category, "in_app"):
                    wanted.append((tenant_id, user_id, content))
                    stored += 1
                else:
                    suppressed.append((tenant_id, user_id))
            split.append((stored, suppressed))
            self.suppressed += suppressed
        if not wanted:
            return [([], suppressed) for _, suppressed in split]
        await self._read_targets({(tenant_id, user_id) for tenant_id, user_id, _ in wanted})
        records = await store_notifications(self.session, wanted)
        self.created += records
        results, start = [], 0
        for stored, suppressed in split:
            results.append((records[start : start + stored], suppressed))
            start += stored
        return results

    async def _read_targets(self, recipients: set[Recipient]) -> None:
        """The recipients' push devices and their tenants' webhook subscribers, read before
        :func:`store_notifications` allocates the seqs: from then on the transaction holds
        the recipients' counter rows, which every other create for them waits for, so what
        remains after it (inserts, the commit) is as short as it can be."""
        new = recipients - self._users_read
        if not new:
            return
        self._users_read |= new
        if self.pushes is not None:
            self.devices.update(await self.pushes.devices_of(self.session, new))
        tenants = {tenant for tenant, _ in new} - self._tenants_read
        if tenants:
            self._tenants_read |= tenants
            self.subscribed.update(
                await subscribed_endpoints(self.session, "notification.created", tenants)
            )

    async def replace_data(
        self, tenant_id: str, user_id: str, notification_id: int, change: Mapping[str, Any]
    ) -> bool:
        """Merge ``change`` into the ``data`` of one of the user's notifications (a digest
        gathering one more event); after the commit ``notification:updated`` says so with
        ``changes.data``. False when it is gone (deleted or purged meanwhile)."""
        owned = and_(_owned(tenant_id, user_id), Notification.id == notification_id)
        current = await self.session.scalar(
            select(Notification.data).where(owned).with_for_update()
        )
        if current is None:
            return False
        data = {**current, **change}
        await self.session.execute(
            update(Notification)
            .where(owned)
            .values(data=data)
            .execution_options(synchronize_session=False)
        )
        self.updated.append((tenant_id, user_id, notification_id, data))
        return True

    def pushed(self) -> list[NotificationRecord]:
        """The stored notifications whose users want ``push`` for their category."""
        return [
            n
            for n in self.created
            if self.wants(n["tenant_id"], n["user_id"], n["category"], "push")
        ]


@dataclass(frozen=True, slots=True)
class InboxChange:
    updated: int
    unread_count: int
    unseen_count: int


class NotificationService:
    """Everything that creates, lists and marks notifications, for every entry point (REST,
    the sockets, the legacy WebSocket and event intake). Built once per process with its
    database, bus and limits."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: NotificationBus,
        limits: NotificationLimits,
        pushes: PushService | None = None,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.limits = limits
        # Push deliveries are recorded with the notifications they push (None: no push).
        self.pushes = pushes
        self._creates = GroupCommit(self._create_batch, max_rows=_GROUP_COMMIT_MAX_ROWS)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[NotificationWrites]:
        """One transaction that stores notifications (and whatever else the caller writes in
        ``writes.session``) and their push deliveries; live delivery and the push tasks
        after the commit. The one way notifications are
        made: :meth:`create` and event intake both use it."""
        pushes: list[int] = []
        async with self.sessions() as session, session.begin():
            writes = NotificationWrites(session, pushes=self.pushes)
            yield writes
            if self.pushes is not None:
                pushes = await self.pushes.record_in(
                    session, writes.pushed(), devices=writes.devices
                )
            if writes.created:
                await report_in(
                    session,
                    "notification.created",
                    [(n["tenant_id"], n) for n in writes.created],
                    subscribed=writes.subscribed,
                )
            updates = await _data_updates(session, writes.updated)
        if writes.created:
            await publish_created(self.bus, writes.created)
        for (tenant_id, user_id), events in updates.items():
            await self._publish(tenant_id, user_id, events)
        if self.pushes is not None:
            await self.pushes.kick(pushes)

    async def create(
        self,
        *,
        tenant_id: str,
        user_ids: Sequence[str],
        notification: NewNotification,
        idempotency_key: str | None = None,
    ) -> CreateResult:
        """Store one notification per recipient; publish after commit.

        Set-based: one statement allocates every recipient's next ``seq`` (the counter row
        lock serialises concurrent creators per user, so seqs have no duplicate and no hole),
        one statement inserts every row. Creates that arrive while another is being written
        share the next transaction (:mod:`hub.services.group_commit`).
        """
        recipients = sorted(set(user_ids))  # sorted: counter rows are locked in one order
        check_limits(notification, len(recipients), self.limits)
        check_expiry(notification, not_before=datetime.now(UTC))
        request = CreateRequest(tenant_id, recipients, notification, idempotency_key)
        return await self._creates.submit(
            Sized(
                request,
                rows=len(recipients),
                exclusive_key=None if idempotency_key is None else (tenant_id, idempotency_key),
            )
        )

    async def _create_batch(self, requests: Sequence[CreateRequest]) -> list[CreateResult]:
        """One transaction for the creates of :meth:`create` that were gathered together."""
        results: list[CreateResult | None] = []
        async with self.writing() as writes:
            fresh: list[CreateRequest] = []
            for request in requests:
                seen = None
                if request.idempotency_key is not None:
                    seen = await _claim_request(
                        writes.session, request.tenant_id, request.idempotency_key
                    )
                results.append(seen)
                if seen is None:
                    fresh.append(request)
            stored = await writes.add_groups(
                [[(r.tenant_id, user, r.notification) for user in r.recipients] for r in fresh]
            )
            made = iter(stored)
            for index, request in enumerate(requests):
                if results[index] is not None:
                    continue
                created, suppressed_keys = next(made)
                ids = [int(item["id"]) for item in created]
                suppressed = [user for _, user in suppressed_keys]
                results[index] = CreateResult(
                    ids=[str(i) for i in ids], created=True, suppressed=suppressed
                )
                if request.idempotency_key is not None:
                    await writes.session.execute(
                        update(NotificationRequest)
                        .where(
                            NotificationRequest.tenant_id == request.tenant_id,
                            NotificationRequest.idempotency_key == request.idempotency_key,
                        )
                        .values(notification_ids=ids, suppressed_user_ids=suppressed)
                    )
        return [result for result in results if result is not None]

    async def page(
        self,
        *,
        tenant_id: str,
        user_id: str,
        limit: int | None = None,
        cursor: str | None = None,
        unread_only: bool = False,
        unseen_only: bool = False,
        archived: bool = False,
        category: str | None = None,
    ) -> Page:
        """Newest first, keyset-paginated on ``seq`` (no OFFSET); archived items only with
        ``archived``, else none; expired items never."""
        size = clamp_limit(limit)
        now = datetime.now(UTC)
        query = select(NOTIFICATIONS).where(_owned(tenant_id, user_id), inbox.not_expired(now))
        if cursor:
            query = query.where(Notification.seq < _seq_below(cursor))
        if archived:
            query = query.where(Notification.archived_at.is_not(None))
        else:
            query = query.where(Notification.archived_at.is_(None))
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        if unseen_only:
            query = query.where(Notification.seen_at.is_(None))
        if category is not None:
            query = query.where(Notification.category == category)
        query = query.order_by(Notification.seq.desc()).limit(size + 1)
        async with self.sessions() as session:
            rows = list((await session.execute(query)).mappings().all())
            current = await inbox.counts(session, tenant_id, user_id, now)
        next_cursor = _seq_cursor(rows[size - 1]["seq"]) if len(rows) > size else None
        return Page(
            items=[serialize(row) for row in rows[:size]], next_cursor=next_cursor, counts=current
        )

    async def broadcast(
        self, *, tenant_id: str, title: str, body: str, data: dict[str, Any]
    ) -> None:
        """Emit ``broadcast`` to every ``/notifications`` socket of the tenant, on every node:
        a tenant-wide announcement, never stored."""
        await self.bus.publish_broadcast(
            tenant_id=tenant_id, payload={"title": title, "body": body, "data": data}
        )

    async def deliveries(
        self, *, tenant_id: str, notification_id: object, user_id: str | None
    ) -> list[DeliveryRecord]:
        """The emails and pushes of a notification of the tenant (of ``user_id``'s, unless
        None: a service asks); 404 for any other."""
        wanted = parse_id(notification_id)
        if wanted is None:
            raise NotFound("notification not found")
        query = select(Notification.id).where(
            Notification.tenant_id == tenant_id, Notification.id == wanted
        )
        if user_id is not None:
            query = query.where(Notification.user_id == user_id)
        async with self.sessions() as session:
            if await session.scalar(query) is None:
                raise NotFound("notification not found")
            emails = await email_deliveries_of(session, tenant_id=tenant_id, notification_id=wanted)
        if self.pushes is None:
            return emails
        return emails + await self.pushes.deliveries_of(tenant_id=tenant_id, notification_id=wanted)

    async def counts(self, *, tenant_id: str, user_id: str) -> inbox.Counts:
        async with self.sessions() as session:
            return await inbox.counts(session, tenant_id, user_id, datetime.now(UTC))

    async def mark_read(
        self,
        *,
        tenant_id: str,
        user_id: str,
        ids: Sequence[object] | None = None,
        all_unread: bool = False,
    ) -> InboxChange:
        """Mark the caller's notifications read (and seen, where they were not); emits
        ``notification:read`` (as in v1, also for an "all" that found nothing unread) and
        ``notification:updated``."""
        return await self.change(
            tenant_id=tenant_id,
            user_id=user_id,
            action=inbox.Action.READ,
            ids=ids,
            all_items=all_unread,
        )

    async def change(
        self,
        *,
        tenant_id: str,
        user_id: str,
        action: inbox.Action,
        ids: Sequence[object] | None = None,
        all_items: bool = False,
    ) -> InboxChange:
        """Mark read, seen or unread, archive, unarchive or delete the caller's notifications
        (``ids``, or all: archiving all archives the read ones); ids that are not the
        caller's, unknown or expired change nothing. Emits ``notification:updated``.

        The counters move by exactly the rows these statements changed, in the same
        transaction (under the user's counter lock, taken first), so concurrent changes and
        creates keep them exact."""
        wanted = _wanted(ids, all_items)
        if wanted == []:
            return await self._unchanged(tenant_id, user_id)
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            await inbox.lock_counter(session, tenant_id, user_id)
            target = inbox.selection(tenant_id, user_id, action, wanted, now)
            updated_ids, move = await inbox.apply(session, action, target, now)
            await inbox.move_counter(session, tenant_id, user_id, move)
            current = await inbox.counts(session, tenant_id, user_id, now)
            if action is inbox.Action.READ and updated_ids:
                # Reported with the marks, in their transaction (docs/protocol.md 11).
                report = {"user_id": user_id, **_which(updated_ids, all_items)}
                report["unread_count"] = current.unread
                await report_in(session, "notification.read", [(tenant_id, report)])
        is_read = action is inbox.Action.READ
        if updated_ids or (is_read and all_items):
            which = _which(updated_ids, all_items)
            events = [_updated(which, _CHANGES[action](iso_utc(now)), current)]
            if is_read:
                events.insert(0, (READ_EVENT, {**which, "unread_count": current.unread}))
            await self._publish(tenant_id, user_id, events)
        return InboxChange(len(updated_ids), current.unread, current.unseen)

    async def _unchanged(self, tenant_id: str, user_id: str) -> InboxChange:
        current = await self.counts(tenant_id=tenant_id, user_id=user_id)
        return InboxChange(0, current.unread, current.unseen)

    async def _publish(
        self, tenant_id: str, user_id: str, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        try:
            await self.bus.publish_user_events(tenant_id=tenant_id, user_id=user_id, events=events)
        except Unavailable:
            # Stored is what counts; a client that missed it reads the list and counts again.
            log.warning("inbox changes stored but not published live")


# What ``notification:updated`` says changed, per action, given the change's time.
_CHANGES: dict[inbox.Action, Callable[[str], dict[str, Any]]] = {
    inbox.Action.READ: lambda at: {"read_at": at},
    inbox.Action.SEEN: lambda at: {"seen_at": at},
    inbox.Action.UNREAD: lambda _: {"read_at": None},
    inbox.Action.ARCHIVE: lambda at: {"archived_at": at},
    inbox.Action.UNARCHIVE: lambda _: {"archived_at": None},
    inbox.Action.DELETE: lambda _: {"deleted": True},
}


def _wanted(ids: Sequence[object] | None, all_items: bool) -> list[int] | None:
    """The parsed ids (``None``: all); neither given is a 400."""
    if all_items:
        return None
    if ids is None:
        raise InvalidInput("give 'ids' or 'all': true")
    return _parse_ids(ids)


def _which(ids: Sequence[int], all_items: bool) -> dict[str, Any]:
    return {"all": True} if all_items else {"ids": [str(i) for i in ids]}


def _updated(
    which: dict[str, Any], changes: dict[str, Any], current: inbox.Counts
) -> tuple[str, dict[str, Any]]:
    return UPDATED_EVENT, {
        **which,
        "changes": changes,
        "unread_count": current.unread,
        "unseen_count": current.unseen,
    }


async def _data_updates(
    session: AsyncSession, updated: Sequence[tuple[str, str, int, dict[str, Any]]]
) -> dict[Recipient, list[tuple[str, dict[str, Any]]]]:
    """The ``notification:updated`` events of data replaced in a transaction, per user,
    with the user's counts as this transaction leaves them."""
    events: dict[Recipient, list[tuple[str, dict[str, Any]]]] = {}
    if not updated:
        return events
    now = datetime.now(UTC)
    current: dict[Recipient, inbox.Counts] = {}
    for tenant_id, user_id, notification_id, data in updated:
        user = (tenant_id, user_id)
        if user not in current:
            current[user] = await inbox.counts(session, tenant_id, user_id, now)
        which = {"ids": [str(notification_id)]}
        events.setdefault(user, []).append(_updated(which, {"data": data}, current[user]))
    return events


async def counts_event(session: AsyncSession, tenant_id: str, user_id: str) -> str:
    """The ``notification:updated`` that ends a replay: no ids, no changes, current counts."""
    current = await inbox.counts(session, tenant_id, user_id, datetime.now(UTC))
    _, payload = _updated({"ids": []}, {}, current)
    return orjson.dumps(payload).decode()


async def _claim_request(
    session: AsyncSession, tenant_id: str, idempotency_key: str
) -> CreateResult | None:
    """Claim an idempotency key; ``None`` when it is new, else what it created before."""
    claimed = await session.execute(
        insert_for(session)(NotificationRequest)
        .values(tenant_id=tenant_id, idempotency_key=idempotency_key, notification_ids=[])
        .on_conflict_do_nothing()
        .returning(NotificationRequest.idempotency_key)
    )
    if claimed.first() is not None:
        return None
    # Seen before (or being created right now: the insert above waited for it).
    stored = (
        await session.execute(
            select(
                NotificationRequest.notification_ids, NotificationRequest.suppressed_user_ids
            ).where(
                NotificationRequest.tenant_id == tenant_id,
                NotificationRequest.idempotency_key == idempotency_key,
            )
        )
    ).one()
    return CreateResult(
        ids=[str(i) for i in stored.notification_ids or []],
        created=False,
        suppressed=list(stored.suppressed_user_ids or []),
    )
