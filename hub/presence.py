"""Presence: which users have a connected socket, on which node, across the whole hub.

Each ``serve`` node counts its own sockets per user in memory (:class:`PresenceTracker`) and
tells the shared :class:`PresenceStore` only about *transitions*: the user's first socket on
this node, and the user's last socket gone for the grace period. Sockets that come and go
while the user stays connected, reconnects within the grace period and every event on a
socket cost no round trip at all; transitions that happen together go in one round trip.

A node that dies cannot say goodbye, so every node's records expire: live nodes refresh a
heartbeat, and any node's sweeper removes the users of a node whose heartbeat ended more
than the grace period ago (a user who reconnected elsewhere meanwhile stays online).

The store answers more than the ``/chat`` presence events need: :meth:`PresenceStore.statuses`
("is this user connected anywhere?"), :meth:`PresenceStore.nodes_of_users` (which nodes hold
the users: routing, :mod:`hub.delivery.routes`) and :meth:`PresenceStore.live_nodes_of`
(those whose heartbeat holds: push's check). One store instance tracks one *scope* (a
namespace's sockets); another scope is another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from db.outage import is_unavailable
from hub.logs import ThrottledLog

log = logging.getLogger(__name__)
STORE_LOG = ThrottledLog(log)

UserKey = tuple[str, str]  # (tenant_id, user_id)
STOP_SECONDS = 5.0
ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class PresenceChange:
    tenant_id: str
    user_id: str
    status: str  # ONLINE or OFFLINE
    last_seen_at: float | None  # unix seconds; when the user was last connected


@dataclass(frozen=True, slots=True)
class PresenceStatus:
    online: bool
    last_seen_at: float | None  # None: never seen (or online and never offline before)


class PresenceListener(Protocol):
    """Told about each change of a user's status across the hub (by exactly one node)."""

    async def on_presence(self, changes: Sequence[PresenceChange]) -> None: ...


class PresenceStore(Protocol):
    """Where nodes record which users they hold. Every method is one round trip."""

    async def add(self, node: str, users: Sequence[UserKey]) -> list[UserKey]:
        """Record ``users`` on ``node``; return those no node held before (now online)."""

    async def remove(self, node: str, users: Sequence[tuple[UserKey, float]]) -> list[UserKey]:
        """Forget ``(user, last seen)`` on ``node``; return those no node holds now (offline)."""

    async def heartbeat(self, node: str, *, now: float, expires_at: float) -> bool:
        """``node`` is alive; its records expire at ``expires_at`` unless refreshed. False
        when the store did not know the node (its records were lost or expired: re-add)."""

    async def expire_nodes(self, *, before: float) -> list[tuple[UserKey, float]]:
        """Remove nodes whose records expired before ``before``; return the users that left
        with them and are on no other node, each with when its node was last alive."""

    async def statuses(self, users: Sequence[UserKey]) -> dict[UserKey, PresenceStatus]: ...

    async def nodes_of(self, user: UserKey) -> set[str]: ...

    async def nodes_of_users(self, users: Sequence[UserKey]) -> dict[UserKey, set[str]]:
        """The nodes holding each of ``users`` (those held by none are left out)."""

    async def live_nodes_of(self, user: UserKey, *, now: float) -> set[str]:
        """The nodes holding ``user`` whose heartbeat has not expired at ``now`` (a node
        killed -9 stops counting at once, before any sweeper removes its records)."""


def _member(user: UserKey) -> str:
    # The tenant's length first, as in hub.rooms: no pair of ids can collide.
    tenant_id, user_id = user
    return f"{len(tenant_id)}:{tenant_id}:{user_id}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _user(member: str | bytes) -> UserKey:
    text = member.decode() if isinstance(member, bytes) else member
    length, rest = text.split(":", 1)
    size = int(length)
    return rest[:size], rest[size + 1 :]


# Keys (prefix P): P"node:"N the users node N holds (set); P"user:"U the nodes holding user U
# (set); P"nodes" each node's expiry (sorted set); P"alive" each node's last heartbeat (hash);
# P"seen" each user's last seen time (hash). Scripts keep each change atomic, so two nodes
# never both announce one transition.
_ADD = """
local p, node = ARGV[1], ARGV[2]
local online = {}
for i = 3, #ARGV do
  local u = ARGV[i]
  redis.call('SADD', p .. 'node:' .. node, u)
  if redis.call('SADD', p .. 'user:' .. u, node) == 1
      and redis.call('SCARD', p .. 'user:' .. u) == 1 then
    table.insert(online, u)
  end
end
return online
"""
_REMOVE = """
local p, node = ARGV[1], ARGV[2]
local offline = {}
for i = 3, #ARGV, 2 do
  local u = ARGV[i]
  redis.call('SREM', p .. 'node:' .. node, u)
  if redis.call('SREM', p .. 'user:' .. u, node) == 1
      and redis.call('SCARD', p .. 'user:' .. u) == 0 then
    redis.call('HSET', p .. 'seen', u, ARGV[i + 1])
    table.insert(offline, u)
  end
end
return offline
"""
_EXPIRE = """
local p = ARGV[1]
local gone = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', p .. 'nodes', '-inf', ARGV[2])) do
  local seen = redis.call('HGET', p .. 'alive', node) or ARGV[2]
  for _, u in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node)) do
    redis.call('SREM', p .. 'user:' .. u, node)
    if redis.call('SCARD', p .. 'user:' .. u) == 0 then
      redis.call('HSET', p .. 'seen', u, seen)
      table.insert(gone, u)
      table.insert(gone, seen)
    end
  end
  redis.call('DEL', p .. 'node:' .. node)
  redis.call('ZREM', p .. 'nodes', node)
  redis.call('HDEL', p .. 'alive', node)
end
return gone
"""


class RedisPresenceStore:
    """The store shared by every node of the hub."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._expire = redis.register_script(_EXPIRE)

    async def add(self, node: str, users: Sequence[UserKey]) -> list[UserKey]:
        online = await self._add(args=[self._prefix, node, *map(_member, users)])
        return [_user(member) for member in online]

    async def remove(self, node: str, users: Sequence[tuple[UserKey, float]]) -> list[UserKey]:
        args: list[str | float] = [self._prefix, node]
        for user, seen in users:
            args += [_member(user), seen]
        return [_user(member) for member in await self._remove(args=args)]

    async def heartbeat(self, node: str, *, now: float, expires_at: float) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._prefix + "nodes", {node: expires_at})
            pipe.hset(self._prefix + "alive", node, now)
            added, _ = await pipe.execute()
        return not added

    async def expire_nodes(self, *, before: float) -> list[tuple[UserKey, float]]:
        gone = await self._expire(args=[self._prefix, before])
        return [(_user(gone[i]), float(gone[i + 1])) for i in range(0, len(gone), 2)]

    async def statuses(self, users: Sequence[UserKey]) -> dict[UserKey, PresenceStatus]:
        if not users:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.scard(self._prefix + "user:" + _member(user))
            pipe.hmget(self._prefix + "seen", [_member(user) for user in users])
            *counts, seen = await pipe.execute()
        return {
            user: PresenceStatus(bool(count), float(last) if last is not None else None)
            for user, count, last in zip(users, counts, seen, strict=True)
        }

    async def nodes_of(self, user: UserKey) -> set[str]:
        return (await self.nodes_of_users([user])).get(user, set())

    async def nodes_of_users(self, users: Sequence[UserKey]) -> dict[UserKey, set[str]]:
        if not users:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.smembers(self._prefix + "user:" + _member(user))
            found = await pipe.execute()
        return {
            user: {_text(n) for n in nodes}
            for user, nodes in zip(users, found, strict=True)
            if nodes
        }

    async def live_nodes_of(self, user: UserKey, *, now: float) -> set[str]:
        nodes = sorted(await self.nodes_of(user))
        if not nodes:
            return set()
        expiries = await self._redis.zmscore(self._prefix + "nodes", nodes)
        return {n for n, at in zip(nodes, expiries, strict=True) if at is not None and at >= now}


class LocalPresenceStore:
    """The embedded profile's store: one process is the whole hub, nothing expires."""

    def __init__(self) -> None:
        self._nodes: dict[UserKey, set[str]] = {}
        self._seen: dict[UserKey, float] = {}

    async def add(self, node: str, users: Sequence[UserKey]) -> list[UserKey]:
        online = []
        for user in users:
            nodes = self._nodes.setdefault(user, set())
            if not nodes:
                online.append(user)
            nodes.add(node)
        return online

    async def remove(self, node: str, users: Sequence[tuple[UserKey, float]]) -> list[UserKey]:
        offline = []
        for user, seen in users:
            nodes = self._nodes.get(user)
            if nodes is None or node not in nodes:
                continue
            nodes.discard(node)
            if not nodes:
                del self._nodes[user]
                self._seen[user] = seen
                offline.append(user)
        return offline

    async def heartbeat(self, node: str, *, now: float, expires_at: float) -> bool:
        return True

    async def expire_nodes(self, *, before: float) -> list[tuple[UserKey, float]]:
        return []

    async def statuses(self, users: Sequence[UserKey]) -> dict[UserKey, PresenceStatus]:
        return {
            user: PresenceStatus(bool(self._nodes.get(user)), self._seen.get(user))
            for user in users
        }

    async def nodes_of(self, user: UserKey) -> set[str]:
        return set(self._nodes.get(user, ()))

    async def nodes_of_users(self, users: Sequence[UserKey]) -> dict[UserKey, set[str]]:
        return {user: set(self._nodes[user]) for user in users if self._nodes.get(user)}

    async def live_nodes_of(self, user: UserKey, *, now: float) -> set[str]:
        return await self.nodes_of(user)


class PresenceTracker:
    """This node's sockets per user, and the transitions it reports to the store.

    ``connected``/``disconnected`` are synchronous and touch only memory; a flush task sends
    what changed (woken at once for new users, so "online" is prompt; removals wait out the
    grace period), refreshes the heartbeat and sweeps dead nodes. A store that does not
    answer delays reports, never loses them: they are sent again on the next flush.
    """

    def __init__(
        self,
        store: PresenceStore,
        *,
        grace_seconds: float,
        node_ttl_seconds: float,
        listener: PresenceListener | None = None,
        clock: Callable[[], float] = time.time,
        node: str | None = None,
    ) -> None:
        self.store = store
        # The node's name in the store; routing (hub.delivery.routes) also names the node's
        # bus channel with it, so all trackers of one process share it.
        self.node = node or uuid.uuid4().hex
        self.listener = listener
        self._grace = grace_seconds
        self._ttl = node_ttl_seconds
        self._clock = clock
        self._sockets: dict[UserKey, int] = {}
        self._to_add: set[UserKey] = set()
        self._leaving: dict[UserKey, float] = {}  # user -> when its last socket left
        self._held: set[UserKey] = set()  # users the store has on this node
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._recorded_waiters: list[asyncio.Future[None]] = []
        self._beaten = False  # a heartbeat has been recorded
        # Store calls made for socket transitions, and for heartbeats and sweeps (benchmark).
        self.round_trips = 0
        self.heartbeat_round_trips = 0

    # -- sockets (no I/O) -------------------------------------------------------------

    def connected(self, user: UserKey) -> None:
        count = self._sockets.get(user, 0) + 1
        self._sockets[user] = count
        if count == 1 and self._leaving.pop(user, None) is None and user not in self._held:
            self._to_add.add(user)
            self._wake.set()

    def disconnected(self, user: UserKey) -> None:
        count = self._sockets.get(user, 0) - 1
        if count > 0:
            self._sockets[user] = count
            return
        self._sockets.pop(user, None)
        if user in self._to_add:
            self._to_add.discard(user)  # never reported: nothing to take back
        else:
            self._leaving[user] = self._clock()

    def is_connected_here(self, user: UserKey) -> bool:
        return user in self._sockets

    def is_recorded(self, user: UserKey) -> bool:
        """Whether the store holds ``user`` on this node (or the user has no socket here)."""
        return user in self._held or user not in self._sockets

    async def recorded(self, users: Sequence[UserKey], *, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until the store holds each of ``users`` that still has a socket here, at
        most ``timeout`` seconds (the store may be away); whether it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(self.is_recorded(user) for user in users):
            waiter: asyncio.Future[None] = loop.create_future()
            self._recorded_waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                return False
            finally:
                if waiter in self._recorded_waiters:
                    self._recorded_waiters.remove(waiter)
        return True

    def _wake_recorded_waiters(self) -> None:
        waiters, self._recorded_waiters = self._recorded_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- the flush loop ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="presence")

    async def close(self) -> None:
        """Stop; this node's records expire at once, so the users it held go offline after
        the grace period unless they reconnected to another node."""
        # A flag as well as the cancel: a client library that turns the cancellation of a call
        # in flight into an error of its own (a Redis or database driver closing the
        # connection) would otherwise leave the loop running, and the process never exits.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: shutdown must not hang on a store that does not answer.
            done, _ = await asyncio.wait({self._task}, timeout=STOP_SECONDS)
            if not done:
                log.warning("presence loop did not stop in %s s", STOP_SECONDS)
        if self._held or self._leaving:
            try:
                now = self._clock()
                await self.store.heartbeat(self.node, now=now, expires_at=now)
            except (RedisError, OSError) as exc:  # it expires by itself
                log.warning("presence records not handed over at shutdown: %s", exc)

    async def _run(self) -> None:
        tick = max(0.05, min(1.0, self._grace / 4, self._ttl / 3))
        next_heartbeat = 0.0
        while not self._stopping:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancellation that stops this loop when it races the wake-up, and the loop
            # then never ends (a hung shutdown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                now = self._clock()
                if now >= next_heartbeat:
                    await self.heartbeat_and_sweep()
                    next_heartbeat = now + self._ttl / 3
            except (RedisError, OSError) as exc:
                STORE_LOG.warning("presence", "presence store does not answer: %s", exc)

    async def flush(self) -> None:
        """Report the users that arrived, and those gone for the grace period."""
        changes: list[PresenceChange] = []
        if self._to_add:
            adding = sorted(self._to_add)
            self._to_add.clear()
            try:
                self.round_trips += 1
                online = await self.store.add(self.node, adding)
            except BaseException:
                self._to_add.update(u for u in adding if u in self._sockets)
                raise
            self._held.update(adding)
            self._wake_recorded_waiters()
            changes += [PresenceChange(*user, ONLINE, None) for user in online]
        now = self._clock()
        due = [(u, at) for u, at in self._leaving.items() if at + self._grace <= now]
        if due:
            for user, _ in due:
                del self._leaving[user]
            try:
                self.round_trips += 1
                offline = await self.store.remove(self.node, due)
            except BaseException:
                for user, at in due:
                    if user not in self._sockets:
                        self._leaving.setdefault(user, at)
                raise
            self._held.difference_update(user for user, _ in due)
            seen = dict(due)
            changes += [PresenceChange(*user, OFFLINE, seen[user]) for user in offline]
        await self._tell(changes)

    async def heartbeat_and_sweep(self) -> None:
        now = self._clock()
        self.heartbeat_round_trips += 2
        known = await self.store.heartbeat(self.node, now=now, expires_at=now + self._ttl)
        first, self._beaten = not self._beaten, True
        if not known and not first and self._held:
            # The store lost this node's records (Redis restarted empty) or expired them (this
            # process stalled past its TTL): record its users again, or messages routed by
            # the store would stop reaching them (only the lag check would).
            log.warning("presence store had lost this node; recording its users again")
            self._to_add.update(u for u in self._held if u in self._sockets)
            self._held.clear()
            self._wake.set()
        gone = await self.store.expire_nodes(before=now - self._grace)
        await self._tell([PresenceChange(*user, OFFLINE, seen) for user, seen in gone])

    async def _tell(self, changes: list[PresenceChange]) -> None:
        if changes and self.listener is not None:
            try:
                await self.listener.on_presence(changes)
            except Exception as exc:  # a failed announcement must not stop the bookkeeping
                if is_unavailable(exc) or isinstance(exc, RedisError | OSError):
                    # The database or Redis is away: the change stays true in the store
                    # (GET /api/presence/ answers it); only this announcement is lost.
                    STORE_LOG.warning("announce", "presence change not announced: %s", exc)
                else:
                    log.exception("presence change could not be announced")
