"""Live delivery in ``seq`` order with gap-free replay, for any numbered stream.

A *stream* is what a number sequence counts: a user's notifications, a conversation's chat
messages. Each connection that follows a stream is a :class:`Subscriber` that remembers the
last ``seq`` it was sent. :class:`SeqDelivery` keeps four promises per subscriber:

- **in order, no duplicate**: an item whose ``seq`` is not above the last one sent is
  dropped; one that arrives ahead of a missing ``seq`` (two writers publishing in the other
  order, or a bus message lost while Redis was away) triggers a catch-up from the database;
- **no gap on (re)connect**: a client that connects with a resume point is registered
  *before* the database is read, so anything committed later arrives over the bus and is
  buffered until the replay has been sent;
- **one slow client hurts nobody**: a send only appends the frame to the connection's
  buffer (a connection that stops reading is dropped at its limit); catch-ups run as tasks
  of their own and share a few database slots;
- **nothing stored is missed for long**, even when its bus message never comes (Redis was
  away when it was published, or the node that stored it died between commit and publish):
  every lag check the node reads the latest ``seq`` of each stream it serves, and a
  subscriber still behind a ``seq`` that was committed a whole check earlier catches up
  from the database. A live-only subscriber (no resume point) starts from the stream's
  latest ``seq`` at connect, so it is covered too.

A higher ``seq`` committed implies every lower one is committed: seqs of a stream are
allocated under the lock of its counter row, which is held until commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.outage import is_unavailable
from hub.logs import ThrottledLog
from hub.metrics import CATCH_UPS, EMITS

log = logging.getLogger(__name__)
LAG_CHECK_LOG = ThrottledLog(log)

REPLAY_PAGE_SIZE = 500
LAG_CHECK_CHUNK = 500
DATABASE_SLOTS = 4
DATABASE_RETRY_SECONDS = 1.0
StreamKey = tuple[str, str]  # (tenant_id, stream id: a user id, a conversation id)

# (session, tenant_id, stream_id, after_seq, limit) -> (seq, encoded item), oldest first
# (an item that expired comes as (seq, None): skipped, but the subscriber is past it)
FetchAfter = Callable[[AsyncSession, str, str, int, int], Awaitable[list[tuple[int, str | None]]]]
# (session, streams) -> the latest stored seq of each of those streams that has any
LatestSeqs = Callable[[AsyncSession, Sequence[StreamKey]], Awaitable[dict[StreamKey, int]]]


class Sink(Protocol):
    """Where a subscriber's frames go: a Socket.IO socket or a legacy WebSocket.

    ``send`` buffers the frame and returns without waiting for the network, so frames leave
    in the order they were sent and a slow client never holds up delivery to others. It
    returns False when the connection is gone (or was just dropped for not reading).
    """

    async def send(self, outgoing: Outgoing) -> bool: ...

    async def close(self) -> None: ...


class Outgoing:
    """One event for many connections. Each wire format (a Socket.IO frame per namespace,
    a legacy WebSocket frame) is encoded once, by the first sink that needs it, and the
    same bytes are written to every other connection."""

    __slots__ = ("data_json", "encoded", "event")

    def __init__(self, event: str, data_json: str) -> None:
        self.event = event
        self.data_json = data_json
        self.encoded: dict[str, Any] = {}


@dataclass(eq=False, slots=True)
class Subscriber:
    tenant_id: str
    stream_id: str
    sink: Sink
    last_seq: int | None  # None: live only, nothing sent yet
    catching_up: bool = False
    replay_end_due: bool = False  # a replay's end still owes the client replay_ended()
    # A seq known to be committed (with every lower one) before a catch-up started: a read
    # that finds nothing up to it means the rest were deleted, so the subscriber is past it.
    settled_seq: int = 0
    pending: list[tuple[int, Outgoing]] = field(default_factory=list)
    closed: bool = False


class SeqDelivery:
    """The registry of this node's subscribers of one kind of stream, and the ordering
    rules above. ``event`` is what each item is emitted as (``notification:new``...)."""

    def __init__(
        self,
        *,
        event: str,
        sessions: async_sessionmaker[AsyncSession],
        fetch_after: FetchAfter,
        latest_seqs: LatestSeqs,
    ) -> None:
        self.event = event
        self._sessions = sessions
        self._fetch_after = fetch_after
        self._latest_seqs = latest_seqs
        self._by_stream: dict[StreamKey, set[Subscriber]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._awaiting_baseline: list[Subscriber] = []
        self._resolving_baselines = False
        self._emitted: dict[str, Counter] = {}
        # Catch-ups of many subscribers at once (a bus that came back, a reconnect storm)
        # share the pool with requests: bounded, so they queue here rather than time out there.
        self._database_slots = asyncio.Semaphore(DATABASE_SLOTS)

    # -- registry ---------------------------------------------------------------------

    def subscribe(
        self, *, tenant_id: str, stream_id: str, sink: Sink, last_seq: int | None
    ) -> Subscriber:
        """Register before replaying: from now on, live items are not missed."""
        # Catching up until start_replay (or start_live) has run: even a live-only client
        # must not receive anything before its connection is fully established.
        subscriber = Subscriber(tenant_id, stream_id, sink, last_seq, catching_up=True)
        self._by_stream.setdefault((tenant_id, stream_id), set()).add(subscriber)
        return subscriber

    def start_replay(self, subscriber: Subscriber) -> None:
        """Send what the subscriber missed since its ``last_seq``, then switch to live."""
        CATCH_UPS.labels("connect").inc()
        if subscriber.last_seq is not None:
            subscriber.replay_end_due = True
            self._spawn(self._catch_up(subscriber, read_database=True))
            return
        # Live-only: its baseline is read with those of every other socket connecting now,
        # in one query (a reconnect storm of thousands costs a few statements, not thousands).
        self._awaiting_baseline.append(subscriber)
        if len(self._awaiting_baseline) == 1 and not self._resolving_baselines:
            self._spawn(self._resolve_baselines())

    async def start_live(self, subscriber: Subscriber) -> None:
        """Switch to live a subscriber whose ``last_seq`` is the stream's latest, read after
        it registered (nothing to replay): what the bus brought meanwhile is sent first."""
        await self._send_pending_in_order(subscriber)
        if subscriber.pending:
            # Buffered items ahead of one that has not come: fetch it (still catching up).
            CATCH_UPS.labels("gap").inc()
            self._spawn(self._catch_up(subscriber, read_database=True))
        else:
            subscriber.catching_up = False

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.closed = True
        key = (subscriber.tenant_id, subscriber.stream_id)
        group = self._by_stream.get(key)
        if group is not None:
            group.discard(subscriber)
            if not group:
                del self._by_stream[key]

    def subscribers(self, tenant_id: str, stream_id: str) -> tuple[Subscriber, ...]:
        return tuple(self._by_stream.get((tenant_id, stream_id), ()))

    # -- delivery ---------------------------------------------------------------------

    async def deliver(self, tenant_id: str, stream_id: str, seq: int, outgoing: Outgoing) -> None:
        """Offer one stored item (``outgoing``, encoded once) to every subscriber of its stream."""
        for subscriber in self.subscribers(tenant_id, stream_id):
            await self.offer(subscriber, seq, outgoing)

    async def replay_ended(self, subscriber: Subscriber) -> None:
        """Called once a replay from the client's resume point has been sent, before what
        was buffered meanwhile: a kind of stream may send something more here."""

    async def send_unordered(self, subscriber: Subscriber, outgoing: Outgoing) -> None:
        """An event outside the sequence (a read mark, an announcement): sent as it comes."""
        await self._send(subscriber, outgoing)

    async def on_resubscribed(self) -> None:
        """Items may have been lost while the bus was away: one batched read finds the
        subscribers behind what is stored, and only those catch up."""
        try:
            latest = await self._read_latest_seqs(self._live_streams())
        except Exception as exc:  # the database is away too: the lag check will retry
            LAG_CHECK_LOG.warning("lag", "catch-up after the bus returned failed: %s", exc)
            return
        self._catch_up_behind(latest, "resubscribed")

    # -- lag checks -------------------------------------------------------------------

    async def watch_for_lag(self, interval_seconds: float) -> None:
        """Run :meth:`check_lag` every ``interval_seconds`` until cancelled."""
        seen: dict[StreamKey, int] = {}
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                seen = await self.check_lag(seen)
            except Exception as exc:  # the database is away: try again next time
                LAG_CHECK_LOG.warning("lag", "delivery lag check failed: %s", exc)

    async def check_lag(self, seen_before: dict[StreamKey, int]) -> dict[StreamKey, int]:
        """Catch up subscribers behind a ``seq`` that ``seen_before`` (the previous check)
        already found committed; return the latest seqs now, for the next check.

        Comparing with the previous check rather than this one leaves bus messages in flight
        (milliseconds old) alone: only what stayed missing for a whole interval is fetched.
        """
        self._retry_baselines()
        seen = await self._read_latest_seqs(self._live_streams())
        self._catch_up_behind(seen_before, "lagging")
        return seen

    def _live_streams(self) -> list[StreamKey]:
        return [
            key
            for key, group in self._by_stream.items()
            if any(s.last_seq is not None and not s.catching_up for s in group)
        ]

    def _catch_up_behind(self, committed_seqs: dict[StreamKey, int], reason: str) -> None:
        for key, committed in committed_seqs.items():
            for subscriber in tuple(self._by_stream.get(key, ())):
                if subscriber.last_seq is not None and subscriber.last_seq < committed:
                    if not subscriber.catching_up:  # a running one may have read already
                        subscriber.settled_seq = max(subscriber.settled_seq, committed)
                    self._begin_catch_up(subscriber, reason)

    def _retry_baselines(self) -> None:
        """Live-only subscribers whose baseline could not be read (the database was away)
        and that have received nothing since: read it now, so the lag check covers them."""
        waiting = [
            s
            for group in self._by_stream.values()
            for s in group
            if s.last_seq is None and not s.catching_up and not s.closed
        ]
        if waiting:
            for subscriber in waiting:
                subscriber.catching_up = True
            self._awaiting_baseline.extend(waiting)
            if not self._resolving_baselines:
                self._spawn(self._resolve_baselines())

    async def _read_latest_seqs(self, keys: Sequence[StreamKey]) -> dict[StreamKey, int]:
        latest: dict[StreamKey, int] = {}
        for start in range(0, len(keys), LAG_CHECK_CHUNK):
            async with self._database_slots, self._sessions() as session:
                latest.update(
                    await self._latest_seqs(session, keys[start : start + LAG_CHECK_CHUNK])
                )
        return latest

    def _begin_catch_up(self, subscriber: Subscriber, reason: str) -> None:
        if subscriber.last_seq is None or subscriber.catching_up or subscriber.closed:
            return  # its own catch-up is running and will read the database anyway
        subscriber.catching_up = True
        CATCH_UPS.labels(reason).inc()
        self._spawn(self._catch_up(subscriber, read_database=True))

    # -- ordering ---------------------------------------------------------------------

    async def offer(self, subscriber: Subscriber, seq: int, outgoing: Outgoing) -> None:
        """Send item ``seq`` now if it is the next one, buffer it while catching up or when
        one before it is missing (then fetched), drop it when it was sent already."""
        if subscriber.catching_up:
            subscriber.pending.append((seq, outgoing))
            return
        last = subscriber.last_seq
        if last is None or seq == last + 1:
            subscriber.last_seq = seq
            await self._send(subscriber, outgoing)
        elif seq > last + 1:
            # Something between is committed but not here yet: fetch it, then go on in order.
            subscriber.pending.append((seq, outgoing))
            self._begin_catch_up(subscriber, "gap")
        # seq <= last: already sent (replayed, or a late duplicate), drop it.

    async def _catch_up(self, subscriber: Subscriber, *, read_database: bool) -> None:
        stalls = 0
        try:
            while not subscriber.closed:
                settled = subscriber.settled_seq  # committed before the read below starts
                sent = await self._send_from_database(subscriber) if read_database else 0
                if read_database and subscriber.last_seq is not None:
                    # Deleted (by their user or the purge) before reaching this subscriber:
                    # without this, every lag check would catch it up again, finding nothing.
                    subscriber.last_seq = max(subscriber.last_seq, settled)
                read_database = True
                if subscriber.replay_end_due:
                    subscriber.replay_end_due = False
                    await self.replay_ended(subscriber)
                await self._send_pending_in_order(subscriber)
                if not subscriber.pending:
                    # No await between the check above and this flip, so no live message
                    # can slip past the buffer.
                    subscriber.catching_up = False
                    return
                # A buffered seq is still ahead of a missing one that the read above did not
                # see (it committed meanwhile): read again. A hole that stays is a row deleted
                # (by its user or the purge) before it reached this client; after a few empty
                # reads, move on rather than hold the client forever.
                stalls = 0 if sent else stalls + 1
                if stalls >= 3:
                    subscriber.last_seq = subscriber.pending[0][0] - 1
                    log.info("seq hole before %s (deleted)", subscriber.pending[0][0])
                await asyncio.sleep(0.01 * stalls)
        except Exception as exc:
            if is_unavailable(exc) and not subscriber.closed:
                # The database is away: keep the client (and its buffer) and try again, once
                # a second, instead of sending every client of the node to reconnect at once.
                LAG_CHECK_LOG.warning("catch-up", "catch-up waits for the database: %s", exc)
                await asyncio.sleep(DATABASE_RETRY_SECONDS)
                self._spawn(self._catch_up(subscriber, read_database=True))
                return
            log.exception("replay failed; closing the connection so the client resumes")
            self.unsubscribe(subscriber)
            with contextlib.suppress(Exception):
                await subscriber.sink.close()

    async def _resolve_baselines(self) -> None:
        """A live-only subscriber starts after its stream's latest stored ``seq``; anything the
        bus brought since it registered is still sent (it is newer than the connect)."""
        self._resolving_baselines = True
        try:
            while self._awaiting_baseline:
                # One turn of the loop first: the sockets of a connect storm whose CONNECT
                # packets are already in hand register too, and share this read. (Waiting any
                # longer would leave a notification stored meanwhile, whose bus message is lost,
                # counted as before the connect: never sent.)
                await asyncio.sleep(0)
                batch = [s for s in self._awaiting_baseline if not s.closed]
                self._awaiting_baseline = []
                keys = list({(s.tenant_id, s.stream_id) for s in batch})
                latest: dict[StreamKey, int] | None = None
                try:
                    latest = await self._read_latest_seqs(keys)
                except Exception as exc:
                    # Go live without a baseline rather than hold the client: the first
                    # item sets one, and the next lag check reads it again.
                    LAG_CHECK_LOG.warning("baseline", "live delivery baseline not read: %s", exc)
                for subscriber in batch:
                    if latest is not None:
                        baseline = latest.get((subscriber.tenant_id, subscriber.stream_id), 0)
                        if subscriber.pending:
                            baseline = min(baseline, min(seq for seq, _ in subscriber.pending) - 1)
                        subscriber.last_seq = baseline
                    self._spawn(self._catch_up(subscriber, read_database=False))
        finally:
            self._resolving_baselines = False

    async def _send_from_database(self, subscriber: Subscriber) -> int:
        sent = 0
        while not subscriber.closed:
            async with self._database_slots, self._sessions() as session:
                page = await self._fetch_after(
                    session,
                    subscriber.tenant_id,
                    subscriber.stream_id,
                    subscriber.last_seq or 0,
                    REPLAY_PAGE_SIZE,
                )
            for seq, data_json in page:
                if subscriber.last_seq is None or seq > subscriber.last_seq:
                    subscriber.last_seq = seq
                    sent += 1
                    if data_json is not None:
                        await self._send(subscriber, Outgoing(self.event, data_json))
            if len(page) < REPLAY_PAGE_SIZE:
                return sent
        return sent

    async def _send_pending_in_order(self, subscriber: Subscriber) -> None:
        """Send buffered items that continue the sequence; keep those past a hole."""
        while subscriber.pending:
            subscriber.pending.sort(key=lambda entry: entry[0])
            seq, outgoing = subscriber.pending[0]
            last = subscriber.last_seq
            if last is not None and seq <= last:
                subscriber.pending.pop(0)
            elif last is None or seq == last + 1:
                subscriber.pending.pop(0)
                subscriber.last_seq = seq
                await self._send(subscriber, outgoing)
            else:
                return

    # -- plumbing ---------------------------------------------------------------------

    async def _send(self, subscriber: Subscriber, outgoing: Outgoing) -> None:
        if subscriber.closed:
            return
        try:
            sent = await subscriber.sink.send(outgoing)
        except Exception:  # a broken connection is that connection's problem only
            log.debug("send to a closing connection failed", exc_info=True)
            return
        if sent:
            counter = self._emitted.get(outgoing.event)
            if counter is None:
                counter = self._emitted[outgoing.event] = EMITS.labels(outgoing.event)
            counter.inc()

    def close_sink(self, sink: Sink) -> None:
        """Close a connection in a task of its own (a close handshake may wait on the client);
        its disconnect handler then unsubscribes it."""
        self._spawn(_close_quietly(sink))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _close_quietly(sink: Sink) -> None:
    try:
        await sink.close()
    except Exception:  # already gone: nothing left to close
        log.debug("closing a connection failed", exc_info=True)
