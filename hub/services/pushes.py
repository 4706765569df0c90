"""Push deliveries: one record per (notification, device), written in the transaction that
stores the notification, sent by the workers under a lease; the state machine of
``hub.services.leases``, which emails share, so a push is never lost and never sent twice.

Status: ``queued`` -> ``sending`` -> ``sent`` | ``retrying`` (-> ``sending`` ...) |
``failed`` | ``gone`` (the push service no longer knows the device; it was removed) |
``skipped`` (the user was connected when its turn came, under ``NOTIFYHUB_PUSH_POLICY=offline``).

Whether the user is connected is decided by the worker when it sends, not when the
notification is stored: that is when it matters, and the storing transaction never waits
for a presence lookup.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

import orjson
from sqlalchemy import Table, and_, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import PushDelivery, PushDevice
from hub.errors import Unavailable
from hub.metrics import PUSHES
from hub.records import DeliveryRecord, NotificationRecord
from hub.services.common import (
    USER_KEYS_TABLES,
    dialect_of,
    insert_for,
    is_postgresql,
    iso_utc,
    user_keys_param,
)
from hub.services.leases import (
    FAILED,
    PENDING,
    QUEUED,
    claim_values,
    claimable,
    due_ids,
    held_by,
    outcome_values,
)
from hub.services.webhooks import report_in

log = logging.getLogger(__name__)

# Final statuses of their own: the device is gone, or the user was connected.
GONE, SKIPPED = "gone", "skipped"


# The devices of a batch's users: constant SQL text whatever the number of users.
_DEVICES_OF_USERS = {
    dialect: text(
        "SELECT d.tenant_id, d.user_id, d.id, d.kind FROM push_devices AS d "  # noqa: S608
        f"JOIN {keys} AS k ON d.tenant_id = k.tenant_id AND d.user_id = k.user_id"
    )
    for dialect, keys in USER_KEYS_TABLES.items()
}


# (tenant_id, user_id) -> [(device_id, kind)]
DevicesByUser = dict[tuple[str, str], list[tuple[str, str]]]


class PushQueue(Protocol):
    """Where push work goes; ``tasks.push`` implements it with Taskiq."""

    async def kick(self, delivery_ids: Sequence[int]) -> None:
        """Queue the sends; :class:`Unavailable` if the queue cannot take them."""
        ...


@dataclass(frozen=True, slots=True)
class PushClaim:
    """One attempt's hold on a delivery; ``attempt`` is the lease's fencing token."""

    delivery_id: int
    attempt: int
    tenant_id: str
    user_id: str
    device_id: str
    kind: str
    token: str
    keys: dict[str, Any]
    payload: dict[str, Any]
    created_at: datetime


def push_payload(notification: NotificationRecord) -> dict[str, Any]:
    """What a device shows (docs/protocol.md, push): small, no ``data``."""
    return {
        "id": notification["id"],
        "title": notification["title"],
        "body": notification["body"],
        "link": notification["link"],
        "category": notification["category"],
        "seq": notification["seq"],
    }


class PushService:
    """Records pushes with their notifications and queues them after the commit; built once
    per process (``NotificationService`` calls it inside its transaction)."""

    def __init__(
        self,
        *,
        queue: PushQueue,
        sessions: async_sessionmaker[AsyncSession],
        sweep_after_seconds: float,
    ) -> None:
        self.queue = queue
        self.sessions = sessions
        # After this long a push whose task never ran is sent by a worker's sweeper.
        self.sweep_after_seconds = sweep_after_seconds

    async def devices_of(
        self, session: AsyncSession, users: Iterable[tuple[str, str]]
    ) -> DevicesByUser:
        """The devices of ``users`` (those that have any), in one statement: read before a
        transaction allocates its seqs, so that the counter row locks are not held meanwhile."""
        found: DevicesByUser = {}
        keys = set(users)
        if not keys:
            return found
        rows = await session.execute(_DEVICES_OF_USERS[dialect_of(session)], user_keys_param(keys))
        for tenant_id, user_id, device_id, kind in rows:
            found.setdefault((tenant_id, user_id), []).append((device_id, kind))
        return found

    async def record_in(
        self,
        session: AsyncSession,
        created: Sequence[NotificationRecord],
        *,
        devices: DevicesByUser,
    ) -> list[int]:
        """One ``queued`` delivery per device of each notification's user, in the caller's
        transaction (``devices``: what :meth:`devices_of` read for them, before the seqs were
        allocated)."""
        if not created or not devices:
            return []
        if not is_postgresql(session):
            devices = await _still_there(session, devices)
        rows = [
            {
                "tenant_id": n["tenant_id"],
                "notification_id": int(n["id"]),
                "user_id": n["user_id"],
                "device_id": device_id,
                "kind": kind,
                "payload": push_payload(n),
            }
            for n in created
            for device_id, kind in devices.get((n["tenant_id"], n["user_id"]), ())
        ]
        if not rows:
            return []
        now = datetime.now(UTC)
        due = now + timedelta(seconds=self.sweep_after_seconds)
        if is_postgresql(session):
            inserted = await session.execute(
                _PG_INSERT_PUSHES,
                {"rows": orjson.dumps(rows).decode(), "status": QUEUED, "due": due, "now": now},
            )
        else:
            queued = {"status": QUEUED, "attempts": 0, "next_attempt_at": due}
            inserted = await session.execute(
                insert_for(session)(PushDelivery)
                .on_conflict_do_nothing()
                .returning(PushDelivery.id),
                [row | queued | {"created_at": now, "updated_at": now} for row in rows],
            )
        return [int(delivery_id) for delivery_id in inserted.scalars()]

    async def kick(self, delivery_ids: Sequence[int]) -> None:
        """Queue the sends of committed deliveries; with the queue away they wait for a
        worker's sweeper (they are stored)."""
        if not delivery_ids:
            return
        try:
            await self.queue.kick(delivery_ids)
        except Unavailable as exc:
            log.warning("%d pushes stored; they wait for the sweeper (%s)", len(delivery_ids), exc)

    async def deliveries_of(self, *, tenant_id: str, notification_id: int) -> list[DeliveryRecord]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(
                    PushDelivery.kind,
                    PushDelivery.device_id,
                    PushDelivery.status,
                    PushDelivery.attempts,
                    PushDelivery.last_error,
                    PushDelivery.updated_at,
                )
                .where(
                    PushDelivery.tenant_id == tenant_id,
                    PushDelivery.notification_id == notification_id,
                )
                .order_by(PushDelivery.id)
            )
            return [
                {
                    "channel": "push",
                    "target": f"{kind}:{device_id}",
                    "status": status,
                    "attempts": attempts,
                    "last_error": last_error,
                    "updated_at": iso_utc(updated_at),
                }
                for kind, device_id, status, attempts, last_error, updated_at in rows
            ]


# -- the workers' side: claim under a lease, record the outcome ------------------------------
# Core statements on the tables (not ORM ones on the models): a worker runs two per push, and
# the ORM's bulk-update machinery cost more CPU than the push itself.
DELIVERIES = cast(Table, PushDelivery.__table__)
D = DELIVERIES.c
V = PushDevice.__table__.c

_CLAIMED = (
    D.id,
    D.attempts,
    D.tenant_id,
    D.user_id,
    D.device_id,
    D.kind,
    D.payload,
    D.created_at,
)
_DEVICE = (V.token, V["keys"])  # ["keys"]: .keys is the collection's method


async def _claim_rows(session: AsyncSession, claiming: Any) -> list[PushClaim]:
    """Run the claiming UPDATE; the claims with their devices' token and keys. PostgreSQL
    returns the joined device's columns from the UPDATE itself; SQLite's RETURNING sees
    only the updated table, so it reads them after (the same transaction)."""
    claiming = claiming.execution_options(synchronize_session=False)
    if is_postgresql(session):
        rows = (await session.execute(claiming.returning(*_CLAIMED, *_DEVICE))).all()
        devices = {row.device_id: (row.token, row.keys) for row in rows}
    else:
        rows = (await session.execute(claiming.returning(*_CLAIMED))).all()
        found = await session.execute(
            select(V.id, *_DEVICE).where(V.id.in_({r.device_id for r in rows}))
        )
        devices = {device_id: (token, keys) for device_id, token, keys in found}
    return [
        PushClaim(
            delivery_id=int(row.id),
            attempt=int(row.attempts),
            tenant_id=row.tenant_id,
            user_id=row.user_id,
            device_id=row.device_id,
            kind=row.kind,
            token=devices[row.device_id][0],
            keys=dict(devices[row.device_id][1] or {}),
            payload=dict(row.payload or {}),
            created_at=row.created_at,
        )
        for row in rows
    ]


# PostgreSQL: one statement with constant text for any number of pushes. The devices were
# read before the transaction took its users' counter locks; one removed since (an erasure
# deletes a user's devices while it holds that user's counter lock, and commits before this
# statement starts) gets no push row.
_PG_INSERT_PUSHES = text(
    """
    INSERT INTO push_deliveries (tenant_id, notification_id, user_id, device_id, kind, payload,
                                 status, attempts, next_attempt_at, created_at, updated_at)
    SELECT r.tenant_id, r.notification_id, r.user_id, r.device_id, r.kind, r.payload,
           :status, 0, :due, :now, :now
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
        tenant_id text, notification_id bigint, user_id text, device_id text, kind text,
        payload jsonb)
    WHERE EXISTS (SELECT 1 FROM push_devices AS d
                  WHERE d.tenant_id = r.tenant_id AND d.id = r.device_id)
    ON CONFLICT (notification_id, device_id) DO NOTHING
    RETURNING id
    """
)


async def _still_there(session: AsyncSession, devices: DevicesByUser) -> DevicesByUser:
    """SQLite: the devices read before the transaction's first write, less those removed
    since (an erasure's), as :data:`_PG_INSERT_PUSHES` checks on PostgreSQL."""
    keys = [
        (tenant_id, device_id)
        for (tenant_id, _), pairs in devices.items()
        for device_id, _ in pairs
    ]
    present = {
        (tenant_id, device_id)
        for tenant_id, device_id in await session.execute(
            select(PushDevice.tenant_id, PushDevice.id).where(
                tuple_(PushDevice.tenant_id, PushDevice.id).in_(keys)
            )
        )
    }
    kept: DevicesByUser = {}
    for (tenant_id, user_id), pairs in devices.items():
        still = [
            (device_id, kind) for device_id, kind in pairs if (tenant_id, device_id) in present
        ]
        if still:
            kept[(tenant_id, user_id)] = still
    return kept


# The device a delivery goes to, joined in the claiming UPDATE (one statement). A removed
# device's pending deliveries end ``gone`` in the transaction that removes it, so every
# pending delivery has its device.
_OF_ITS_DEVICE = and_(V.id == D.device_id, V.tenant_id == D.tenant_id)


async def end_pending_of_device(session: AsyncSession, *, tenant_id: str, device_id: str) -> None:
    """A device is being removed: its pushes still waiting will never be sent."""
    await session.execute(
        update(DELIVERIES)
        .where(
            D.tenant_id == tenant_id,
            D.device_id == device_id,
            D.status.in_(PENDING),
        )
        .values(status=GONE, lease_until=None, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )


async def claim(
    *, sessions: async_sessionmaker[AsyncSession], delivery_id: int, lease_seconds: float
) -> PushClaim | None:
    """Take the delivery for one attempt (a task's path); None when it is not ours to send."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        claims = await _claim_rows(
            session,
            update(DELIVERIES)
            .where(
                _OF_ITS_DEVICE,
                D.id == delivery_id,
                claimable(D, now),
            )
            .values(**claim_values(D, now, lease_seconds)),
        )
    return claims[0] if claims else None


async def claim_due(
    *, sessions: async_sessionmaker[AsyncSession], limit: int, lease_seconds: float
) -> list[PushClaim]:
    """Take up to ``limit`` due deliveries (the sweeper's path), as emails' ``claim_due``."""
    if limit <= 0:
        return []
    now = datetime.now(UTC)
    due = due_ids(D, now, limit)
    async with sessions() as session, session.begin():
        return await _claim_rows(
            session,
            update(DELIVERIES)
            .where(_OF_ITS_DEVICE, D.id.in_(select(due.c.id)))
            .values(**claim_values(D, now, lease_seconds)),
        )


async def finish(
    *,
    sessions: async_sessionmaker[AsyncSession],
    claim: PushClaim,
    status: str,
    error: str | None = None,
    retry_at: datetime | None = None,
) -> bool:
    """Record an attempt's outcome while it still holds the delivery (``sent`` whoever
    holds it: the push service took it). False when nothing was recorded. ``failed`` is
    reported to the tenant's webhooks (``push.failed``) in the same transaction."""
    now = datetime.now(UTC)
    values = outcome_values(status, now, retry_at)
    if error is not None:
        values["last_error"] = error[:2000]
    held = held_by(D, claim.attempt, status)
    async with sessions() as session, session.begin():
        recorded = await session.scalar(
            update(DELIVERIES)
            .where(D.id == claim.delivery_id, held)
            .values(**values)
            .returning(D.id)
            .execution_options(synchronize_session=False)
        )
        if recorded is not None and status == FAILED:
            report = {
                "notification_id": str(claim.payload.get("id", "")),
                "user_id": claim.user_id,
                "device_id": claim.device_id,
                "kind": claim.kind,
                "attempts": claim.attempt,
                "error": error[:2000] if error else None,
            }
            await report_in(session, "push.failed", [(claim.tenant_id, report)])
    if recorded is None:
        return False
    PUSHES.labels(claim.kind, status).inc()
    return True
