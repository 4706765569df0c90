"""Presence of chat users: announced to those who share a conversation with them, and
answered for ``GET /api/presence/``. The bookkeeping across nodes is :mod:`hub.presence`;
this service decides who is told and shapes what they receive."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import ConversationMember
from hub.errors import InvalidInput
from hub.presence import ONLINE, PresenceChange, PresenceTracker, UserKey
from hub.realtime import CHAT_NAMESPACE, Realtime
from hub.records import PresenceRecord
from hub.services.common import iso_utc

PRESENCE_EVENT = "presence"
MAX_PRESENCE_USERS = 100
EMITS_IN_FLIGHT = 32


def _record(user_id: str, online: bool, last_seen: float | None) -> PresenceRecord:
    # While online there is no "last seen": the user is there now.
    seen = None if online or last_seen is None else iso_utc(datetime.fromtimestamp(last_seen, UTC))
    return {"user_id": user_id, "status": ONLINE if online else "offline", "last_seen_at": seen}


class PresenceService:
    """Built once per ``serve`` process around this node's :class:`PresenceTracker`."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        realtime: Realtime,
        tracker: PresenceTracker,
    ) -> None:
        self.sessions = sessions
        self.realtime = realtime
        self.tracker = tracker
        tracker.listener = self

    def connected(self, *, tenant_id: str, user_id: str) -> None:
        """A socket of the user opened on this node (memory only; see PresenceTracker)."""
        self.tracker.connected((tenant_id, user_id))

    def disconnected(self, *, tenant_id: str, user_id: str) -> None:
        self.tracker.disconnected((tenant_id, user_id))

    async def statuses(self, *, tenant_id: str, user_ids: Sequence[str]) -> list[PresenceRecord]:
        """Each user's status within the caller's tenant, in the order asked (one round trip)."""
        if len(user_ids) > MAX_PRESENCE_USERS:
            raise InvalidInput(f"ask for at most {MAX_PRESENCE_USERS} users at once")
        wanted = list(dict.fromkeys(user_ids))
        found = await self.tracker.store.statuses([(tenant_id, user_id) for user_id in wanted])
        statuses = [found[(tenant_id, user_id)] for user_id in wanted]
        return [
            _record(user_id, status.online, status.last_seen_at)
            for user_id, status in zip(wanted, statuses, strict=True)
        ]

    async def on_presence(self, changes: Sequence[PresenceChange]) -> None:
        """Tell each change to the users who have a conversation with that user: one query
        per tenant for the peers, one emit per change to all their rooms at once, the emits
        of a batch in flight together (a reconnect storm is hundreds of changes at once)."""
        by_tenant: dict[str, list[PresenceChange]] = defaultdict(list)
        for change in changes:
            by_tenant[change.tenant_id].append(change)
        emits: list[tuple[str, list[str], PresenceRecord]] = []
        for tenant_id, among in by_tenant.items():
            peers = await self._peers(tenant_id, [change.user_id for change in among])
            emits += [
                (
                    tenant_id,
                    sorted(peers[change.user_id]),
                    _record(change.user_id, change.status == ONLINE, change.last_seen_at),
                )
                for change in among
                if peers.get(change.user_id)
            ]
        for start in range(0, len(emits), EMITS_IN_FLIGHT):
            await asyncio.gather(
                *(
                    self.realtime.to_users(
                        tenant_id=tenant_id,
                        user_ids=user_ids,
                        event=PRESENCE_EVENT,
                        data=record,
                        namespace=CHAT_NAMESPACE,
                    )
                    for tenant_id, user_ids, record in emits[start : start + EMITS_IN_FLIGHT]
                )
            )

    async def _peers(self, tenant_id: str, user_ids: list[str]) -> dict[str, set[str]]:
        peers: dict[str, set[str]] = defaultdict(set)
        async with self.sessions() as session:
            rows = await session.execute(
                select(ConversationMember.user_id, ConversationMember.peer_id).where(
                    ConversationMember.tenant_id == tenant_id,
                    ConversationMember.user_id.in_(user_ids),
                )
            )
            for user_id, peer_id in rows:
                peers[user_id].add(peer_id)
        return peers


__all__ = ["PresenceService", "UserKey"]
