"""Per-node delivery of ``message:new`` to local ``/chat`` sockets, gap-free across reconnects.

Each conversation is one stream of :mod:`hub.delivery.ordered` (its messages are numbered by
``seq``), so a chat socket follows one stream per conversation of its user, the way a
``/notifications`` socket follows its user's notifications:

1. At connect the socket is registered under its user *before* the database is read, so
   every message committed from then on reaches it over the bus (buffered meanwhile).
2. One query reads the latest ``seq`` of each of the user's conversations (one for all the
   sockets connecting at the same moment). A conversation
   named in ``auth.last_seqs`` below that is replayed from the database; every other one
   starts live at its latest ``seq``; a conversation the query did not see was created
   after it, so all its messages come over the bus and it starts at 0.
3. Then the buffered messages go through the same ordering as live ones: in ``seq`` order
   per conversation, no duplicate, a gap fetched from the database.

Conversations ids in ``last_seqs`` that are not the user's are simply never matched: the
query only returns the user's own, within the tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.outage import is_unavailable
from hub.delivery.bus import PublishedMessage
from hub.delivery.ordered import (
    DATABASE_RETRY_SECONDS,
    FetchAfter,
    LatestSeqs,
    Outgoing,
    SeqDelivery,
    Sink,
    StreamKey,
    Subscriber,
)
from hub.delivery.routes import ROUTE_WAIT_SECONDS
from hub.logs import ThrottledLog
from hub.presence import PresenceTracker

log = logging.getLogger(__name__)
SETUP_LOG = ThrottledLog(log)

NEW_MESSAGE_EVENT = "message:new"

# (session, users) -> per user, {conversation id: latest seq} of each of their conversations
ConversationSeqs = Callable[
    [AsyncSession, Sequence[StreamKey]], Awaitable[dict[StreamKey, dict[str, int]]]
]
SETUP_CHUNK = 500


@dataclass(eq=False, slots=True)
class ChatConnection:
    """One ``/chat`` socket: its streams, one per conversation, once it is set up."""

    tenant_id: str
    user_id: str
    sink: Sink
    last_seqs: Mapping[str, int]
    streams: dict[str, Subscriber] = field(default_factory=dict)
    # Messages that came before the setup read the database; None once it has.
    early: list[tuple[PublishedMessage, Outgoing]] | None = field(default_factory=list)
    closed: bool = False


class ChatDelivery:
    """This node's chat sockets and the per-conversation ordering of their messages."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        fetch_after: FetchAfter,
        latest_seqs: LatestSeqs,
        conversation_seqs: ConversationSeqs,
        routes: PresenceTracker | None = None,
    ) -> None:
        self.streams = SeqDelivery(
            event=NEW_MESSAGE_EVENT,
            sessions=sessions,
            fetch_after=fetch_after,
            latest_seqs=latest_seqs,
        )
        self._sessions = sessions
        self._conversation_seqs = conversation_seqs
        # The chat presence tracker, whose map routes chat events to this node (None: one
        # process hears everything). Its connected() is called by the namespace.
        self.routes = routes
        self._by_user: dict[StreamKey, set[ChatConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._awaiting_setup: list[ChatConnection] = []
        self._setting_up = False

    def connect(
        self, *, tenant_id: str, user_id: str, sink: Sink, last_seqs: Mapping[str, int]
    ) -> ChatConnection:
        """Register now (nothing committed from here on is missed) and set the streams up in
        a task, which runs once the CONNECT answer is queued: replayed messages then reach a
        connected client. Sockets connecting at once are set up with one query."""
        connection = ChatConnection(tenant_id, user_id, sink, last_seqs)
        self._by_user.setdefault((tenant_id, user_id), set()).add(connection)
        self._awaiting_setup.append(connection)
        if len(self._awaiting_setup) == 1 and not self._setting_up:
            task = asyncio.ensure_future(self._set_up_waiting())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return connection

    async def wait_routed(self, tenant_id: str, user_id: str) -> None:
        """Until the chat route map sends this user's events here (bounded; see
        :meth:`hub.delivery.notifications.NotificationDelivery.wait_routed`)."""
        if self.routes is not None:
            await self.routes.recorded([(tenant_id, user_id)], timeout=ROUTE_WAIT_SECONDS)

    def disconnect(self, connection: ChatConnection) -> None:
        connection.closed = True
        for subscriber in connection.streams.values():
            self.streams.unsubscribe(subscriber)
        connection.streams.clear()
        key = (connection.tenant_id, connection.user_id)
        group = self._by_user.get(key)
        if group is not None:
            group.discard(connection)
            if not group:
                del self._by_user[key]

    async def _set_up_waiting(self) -> None:
        self._setting_up = True
        try:
            while self._awaiting_setup:
                batch = [c for c in self._awaiting_setup[:SETUP_CHUNK] if not c.closed]
                del self._awaiting_setup[:SETUP_CHUNK]
                if self.routes is not None:
                    # Routed here before the database is read (see hub.delivery.routes);
                    # bounded: with Redis away, the lag check repairs what the bus misses.
                    users = list({(c.tenant_id, c.user_id) for c in batch})
                    await self.routes.recorded(users, timeout=ROUTE_WAIT_SECONDS)
                latest = await self._read_conversations(batch)
                for connection in batch:
                    if latest is None:
                        await self._drop(connection)
                    elif not connection.closed:
                        key = (connection.tenant_id, connection.user_id)
                        await self._set_up(connection, latest.get(key, {}))
        finally:
            self._setting_up = False

    async def _read_conversations(
        self, batch: list[ChatConnection]
    ) -> dict[StreamKey, dict[str, int]] | None:
        """The batch's users' conversations; None after an error that is not an outage."""
        users = list({(c.tenant_id, c.user_id) for c in batch})
        while any(not c.closed for c in batch):
            try:
                async with self._sessions() as session:
                    return await self._conversation_seqs(session, users)
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("chat connection setup failed; closing the connections")
                    return None
                # The database is away: keep the sockets and what they were sent, try again.
                SETUP_LOG.warning("setup", "chat setup waits for the database: %s", exc)
                await asyncio.sleep(DATABASE_RETRY_SECONDS)
        return {}

    async def _drop(self, connection: ChatConnection) -> None:
        self.disconnect(connection)
        with contextlib.suppress(Exception):
            await connection.sink.close()

    async def _set_up(self, connection: ChatConnection, latest: dict[str, int]) -> None:
        live: list[Subscriber] = []
        for conversation_id, stored in latest.items():
            resume = connection.last_seqs.get(conversation_id)
            # A resume point above what is stored is the client's mistake: start at what is
            # stored rather than hold back the next messages.
            start = stored if resume is None else min(resume, stored)
            subscriber = self._follow(connection, conversation_id, start)
            if resume is not None and resume < stored:
                self.streams.start_replay(subscriber)
            else:
                live.append(subscriber)
        early, connection.early = connection.early or [], None
        for item, outgoing in early:
            await self._offer(connection, item, outgoing)
        for subscriber in live:
            await self.streams.start_live(subscriber)

    def _follow(self, connection: ChatConnection, conversation_id: str, seq: int) -> Subscriber:
        subscriber = self.streams.subscribe(
            tenant_id=connection.tenant_id,
            stream_id=conversation_id,
            sink=connection.sink,
            last_seq=seq,
        )
        connection.streams[conversation_id] = subscriber
        return subscriber

    async def _offer(
        self, connection: ChatConnection, item: PublishedMessage, outgoing: Outgoing
    ) -> None:
        if connection.closed:  # it went away while earlier messages were being sent
            return
        subscriber = connection.streams.get(item.conversation_id)
        if subscriber is None:
            # Created after the setup read the user's conversations: every message of it
            # comes over the bus, from seq 1.
            subscriber = self._follow(connection, item.conversation_id, 0)
            await self.streams.start_live(subscriber)
        await self.streams.offer(subscriber, item.seq, outgoing)

    # -- bus listener -----------------------------------------------------------------

    async def on_message(self, item: PublishedMessage) -> None:
        outgoing = Outgoing(NEW_MESSAGE_EVENT, item.json)  # one encoding for every device
        for user_id in item.participants:
            for connection in tuple(self._by_user.get((item.tenant_id, user_id), ())):
                if connection.early is not None:
                    connection.early.append((item, outgoing))
                else:
                    await self._offer(connection, item, outgoing)

    def disconnect_user(self, tenant_id: str, user_id: str) -> None:
        """Close every ``/chat`` socket of the user on this node (in tasks, as
        :meth:`SeqDelivery.close_sink` does); their disconnect handlers clean up."""
        for connection in tuple(self._by_user.get((tenant_id, user_id), ())):
            self.streams.close_sink(connection.sink)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.streams.close()
