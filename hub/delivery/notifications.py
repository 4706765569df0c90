"""Per-node delivery of ``notification:new``, ``:read``, ``:updated`` and ``broadcast`` to
local connections (``/notifications`` sockets and legacy WebSockets).

A user's notifications are one stream of :mod:`hub.delivery.ordered`: in ``seq`` order, no
duplicate, replayed from ``last_seq`` without a gap, the replay ended by the user's current
counts. Read marks, other changes and tenant announcements are not numbered and go out as
they come.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.delivery.bus import PublishedNotification, TenantBroadcast, UserEvents
from hub.delivery.ordered import (
    FetchAfter,
    LatestSeqs,
    Outgoing,
    SeqDelivery,
    Sink,
    Subscriber,
)
from hub.delivery.routes import ROUTE_WAIT_SECONDS
from hub.presence import PresenceTracker

NEW_EVENT = "notification:new"
READ_EVENT = "notification:read"
UPDATED_EVENT = "notification:updated"
BROADCAST_EVENT = "broadcast"
PREFERENCES_EVENT = "preferences:updated"
# Events of the Socket.IO protocol only: legacy WebSockets keep the events of the protocol
# they were written for.
SOCKETIO_ONLY = frozenset({BROADCAST_EVENT, PREFERENCES_EVENT})

# (session, tenant_id, user_id) -> the encoded ``notification:updated`` payload that ends a
# replay: the user's current counts (what changed while the client was away is not replayed)
CountsEvent = Callable[[AsyncSession, str, str], Awaitable[str]]

__all__ = ["NotificationDelivery", "Outgoing", "Sink", "Subscriber"]


class NotificationDelivery(SeqDelivery):
    """Each user's notifications as a stream (the stream id is the user id), plus the
    tenant's subscribers for announcements."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        fetch_after: FetchAfter,
        latest_seqs: LatestSeqs,
        counts_event: CountsEvent,
        routes: PresenceTracker | None = None,
    ) -> None:
        super().__init__(
            event=NEW_EVENT, sessions=sessions, fetch_after=fetch_after, latest_seqs=latest_seqs
        )
        self._counts_event = counts_event
        # This node's records in the /notifications route map (hub.delivery.routes); None
        # when every node hears everything (the embedded profile: one process).
        self.routes = routes
        self._by_tenant: dict[str, set[Subscriber]] = {}

    def subscribe_user(
        self,
        *,
        tenant_id: str,
        user_id: str,
        sink: Sink,
        last_seq: int | None,
        # Legacy WebSockets never had tenant announcements, nor preferences:updated
        # (SOCKETIO_ONLY).
        wants_broadcasts: bool = True,
    ) -> Subscriber:
        """Register before replaying: from now on, live notifications are not missed."""
        subscriber = self.subscribe(
            tenant_id=tenant_id, stream_id=user_id, sink=sink, last_seq=last_seq
        )
        if wants_broadcasts:
            self._by_tenant.setdefault(tenant_id, set()).add(subscriber)
        if self.routes is not None:
            self.routes.connected((tenant_id, user_id))
        return subscriber

    async def wait_routed(self, tenant_id: str, user_id: str) -> None:
        """Until the route map sends this user's notifications here (bounded): a socket
        that waits for this before its CONNECT is answered gets everything committed after
        it connected, over the bus."""
        if self.routes is not None:
            await self.routes.recorded([(tenant_id, user_id)], timeout=ROUTE_WAIT_SECONDS)

    def start_replay(self, subscriber: Subscriber) -> None:
        """Once the route map sends this user's notifications here, read the database: a
        publisher that looked up the routes earlier published something committed earlier,
        which the read finds."""
        user = (subscriber.tenant_id, subscriber.stream_id)
        if self.routes is None or self.routes.is_recorded(user):
            super().start_replay(subscriber)
        else:
            self._spawn(self._replay_once_routed(subscriber))

    async def _replay_once_routed(self, subscriber: Subscriber) -> None:
        assert self.routes is not None
        user = (subscriber.tenant_id, subscriber.stream_id)
        # Bounded: with Redis away the replay goes on, and the lag check repairs the rest.
        await self.routes.recorded([user], timeout=ROUTE_WAIT_SECONDS)
        if not subscriber.closed:
            super().start_replay(subscriber)

    async def is_connected(self, tenant_id: str, user_id: str) -> bool:
        """Whether the user has a connection on this node: the presence answer of a
        single-process hub (push's ``offline`` policy on the embedded profile)."""
        return bool(self.subscribers(tenant_id, user_id))

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if self.routes is not None and not subscriber.closed:  # once per subscriber
            self.routes.disconnected((subscriber.tenant_id, subscriber.stream_id))
        super().unsubscribe(subscriber)
        tenant_group = self._by_tenant.get(subscriber.tenant_id)
        if tenant_group is not None:
            tenant_group.discard(subscriber)
            if not tenant_group:
                del self._by_tenant[subscriber.tenant_id]

    def disconnect_user(self, tenant_id: str, user_id: str) -> None:
        """Close every connection of the user on this node (Socket.IO and legacy WebSocket).
        In tasks: a legacy WebSocket's close handshake must not hold up the bus listener."""
        for subscriber in self.subscribers(tenant_id, user_id):
            self.close_sink(subscriber.sink)

    async def replay_ended(self, subscriber: Subscriber) -> None:
        """After the replayed notifications: counts at least as new as them."""
        async with self._database_slots, self._sessions() as session:
            data_json = await self._counts_event(
                session, subscriber.tenant_id, subscriber.stream_id
            )
        await self.send_unordered(subscriber, Outgoing(UPDATED_EVENT, data_json))

    # -- bus listener -----------------------------------------------------------------

    async def on_new(self, items: Sequence[PublishedNotification]) -> None:
        for item in items:
            # One encoding for all of the user's devices.
            outgoing = Outgoing(NEW_EVENT, item.json)
            await self.deliver(item.tenant_id, item.user_id, item.seq, outgoing)

    async def on_user_events(self, events: UserEvents) -> None:
        # Not ordered against notification:new (they carry no seq): they describe rows that
        # exist already, and carry the counts after the change.
        group = self.subscribers(events.tenant_id, events.user_id)
        socketio = self._by_tenant.get(events.tenant_id, set())  # those that want broadcasts
        for name, data_json in events.events:
            outgoing = Outgoing(name, data_json)
            for subscriber in group:
                if name not in SOCKETIO_ONLY or subscriber in socketio:
                    await self.send_unordered(subscriber, outgoing)

    async def on_broadcast(self, broadcast: TenantBroadcast) -> None:
        # Announcements are not stored, so there is nothing to order or replay.
        outgoing = Outgoing(BROADCAST_EVENT, broadcast.json)
        for subscriber in tuple(self._by_tenant.get(broadcast.tenant_id, ())):
            await self.send_unordered(subscriber, outgoing)
