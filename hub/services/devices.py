"""Push devices of users: register (idempotent per endpoint or token), list, remove.

A device belongs to the user who registered it last: the same browser or phone signing in
as another user of the tenant moves to that user, so a shared device never receives the
previous user's notifications.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import PushDevice
from hub.errors import NotFound
from hub.records import DeviceRecord
from hub.services.common import insert_for, iso_utc
from hub.services.pushes import end_pending_of_device

WEBPUSH, FCM, APNS = "webpush", "fcm", "apns"
KINDS = (WEBPUSH, FCM, APNS)


@dataclass(frozen=True, slots=True)
class Registration:
    device: DeviceRecord
    created: bool  # False: this endpoint or token was registered before (same id)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _record(row: PushDevice) -> DeviceRecord:
    return {"id": row.id, "kind": row.kind, "created_at": iso_utc(row.created_at)}


class DeviceService:
    """Built once per process; REST calls it, push delivery removes devices through it."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def register(
        self,
        *,
        tenant_id: str,
        user_id: str,
        kind: str,
        token: str,
        keys: dict[str, Any] | None = None,
    ) -> Registration:
        """Store the device (``token``: the Web Push endpoint or the FCM/APNs token)."""
        hashed = token_hash(token)
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            inserted = await session.execute(
                insert_for(session)(PushDevice)
                .values(
                    id=uuid.uuid4().hex,
                    tenant_id=tenant_id,
                    user_id=user_id,
                    kind=kind,
                    token=token,
                    token_hash=hashed,
                    keys=keys or {},
                    created_at=now,
                )
                .on_conflict_do_nothing()
                .returning(PushDevice.id)
            )
            created = inserted.first() is not None
            if not created:
                # Known: it now belongs to this user, with the browser's current keys.
                await session.execute(
                    update(PushDevice)
                    .where(
                        PushDevice.tenant_id == tenant_id,
                        PushDevice.kind == kind,
                        PushDevice.token_hash == hashed,
                    )
                    .values(user_id=user_id, keys=keys or {})
                )
            row = await session.scalar(
                select(PushDevice).where(
                    PushDevice.tenant_id == tenant_id,
                    PushDevice.kind == kind,
                    PushDevice.token_hash == hashed,
                )
            )
            if row is None:  # inserted or found above, in this transaction
                raise RuntimeError("push device vanished while registering it")
            return Registration(device=_record(row), created=created)

    async def of_user(self, *, tenant_id: str, user_id: str) -> list[DeviceRecord]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(PushDevice)
                .where(PushDevice.tenant_id == tenant_id, PushDevice.user_id == user_id)
                .order_by(PushDevice.created_at, PushDevice.id)
            )
            return [_record(row) for row in rows]

    async def delete(self, *, tenant_id: str, user_id: str, device_id: str) -> None:
        """Remove one of the caller's devices; 404 for any other."""
        async with self.sessions() as session, session.begin():
            removed = await session.execute(
                delete(PushDevice)
                .where(
                    PushDevice.tenant_id == tenant_id,
                    PushDevice.user_id == user_id,
                    PushDevice.id == device_id,
                )
                .returning(PushDevice.id)
            )
            if removed.first() is None:
                raise NotFound("device not found")
            await end_pending_of_device(session, tenant_id=tenant_id, device_id=device_id)

    async def forget(self, *, tenant_id: str, device_id: str) -> None:
        """Remove a device the push service says is gone (404/410)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                delete(PushDevice).where(
                    PushDevice.tenant_id == tenant_id, PushDevice.id == device_id
                )
            )
            await end_pending_of_device(session, tenant_id=tenant_id, device_id=device_id)
