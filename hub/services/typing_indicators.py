"""Typing indicators: relayed to the other participant only, throttled and expiring.

At most one ``typing: true`` is relayed per user and conversation per throttle interval;
a ``typing: false`` follows when no refresh came for the expiry interval, when the typer
says so, or when the typer's socket disconnects. The state lives in Redis when configured,
so refreshes arriving at different nodes count together; the node that saw the last
refresh owns the expiry timer (it compares a stamp, so a later refresh elsewhere wins).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from hub.realtime import CHAT_NAMESPACE, Realtime


class TypingState(Protocol):
    async def refresh(self, key: str, stamp: str) -> bool:
        """Record a refresh; True when a relay is due (throttle window open)."""

    async def clear_if(self, key: str, stamp: str | None) -> bool:
        """End typing if its last refresh is ``stamp`` (any, if None); True if it ended."""


class LocalTypingState:
    def __init__(self, *, throttle_seconds: float, clock: Callable[[], float]) -> None:
        self._throttle = throttle_seconds
        self._clock = clock
        self._stamps: dict[str, str] = {}
        self._relayed_at: dict[str, float] = {}

    async def refresh(self, key: str, stamp: str) -> bool:
        self._stamps[key] = stamp
        now = self._clock()
        if now - self._relayed_at.get(key, float("-inf")) < self._throttle:
            return False
        self._relayed_at[key] = now
        return True

    async def clear_if(self, key: str, stamp: str | None) -> bool:
        current = self._stamps.get(key)
        if current is None or (stamp is not None and current != stamp):
            return False
        del self._stamps[key]
        self._relayed_at.pop(key, None)
        return True


_CLEAR_IF = """
local current = redis.call('GET', KEYS[1])
if not current or (ARGV[1] ~= '' and current ~= ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


class RedisTypingState:
    def __init__(
        self, redis: Redis, *, prefix: str, throttle_seconds: float, expiry_seconds: float
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._throttle_ms = int(throttle_seconds * 1000)
        self._keep_ms = int(expiry_seconds * 2000)
        self._clear = redis.register_script(_CLEAR_IF)

    async def refresh(self, key: str, stamp: str) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{self._prefix}s:{key}", stamp, px=self._keep_ms)
            pipe.set(f"{self._prefix}r:{key}", "1", px=self._throttle_ms, nx=True)
            _, relay = await pipe.execute()
        return bool(relay)

    async def clear_if(self, key: str, stamp: str | None) -> bool:
        keys = [f"{self._prefix}s:{key}", f"{self._prefix}r:{key}"]
        return bool(await self._clear(keys=keys, args=[stamp or ""]))


class TypingRelay:
    """Relays typing events and owns this node's expiry timers."""

    def __init__(self, *, state: TypingState, realtime: Realtime, expiry_seconds: float) -> None:
        self._state = state
        self._realtime = realtime
        self._expiry = expiry_seconds
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def key(tenant_id: str, conversation_id: str, user_id: str) -> str:
        return f"{len(tenant_id)}:{tenant_id}:{conversation_id}:{user_id}"

    async def update(
        self, *, tenant_id: str, conversation_id: str, user_id: str, peer_id: str, typing: bool
    ) -> str | None:
        """Apply one ``typing`` event; returns the stamp when the user is now typing."""
        key = self.key(tenant_id, conversation_id, user_id)
        if not typing:
            self._cancel_timer(key)
            if await self._state.clear_if(key, None):
                await self._relay(tenant_id, conversation_id, user_id, peer_id, typing=False)
            return None
        stamp = uuid.uuid4().hex
        if await self._state.refresh(key, stamp):
            await self._relay(tenant_id, conversation_id, user_id, peer_id, typing=True)
        self._cancel_timer(key)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(
            self._expiry,
            self._spawn_expiry,
            tenant_id,
            conversation_id,
            user_id,
            peer_id,
            stamp,
        )
        return stamp

    async def stop(
        self, *, tenant_id: str, conversation_id: str, user_id: str, peer_id: str, stamp: str
    ) -> None:
        """The typer's socket went away: end typing unless a newer refresh came since."""
        key = self.key(tenant_id, conversation_id, user_id)
        if await self._state.clear_if(key, stamp):
            self._cancel_timer(key)
            await self._relay(tenant_id, conversation_id, user_id, peer_id, typing=False)

    def _spawn_expiry(self, *args: str) -> None:
        self._timers.pop(self.key(args[0], args[1], args[2]), None)
        task = asyncio.ensure_future(self._expire(*args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(
        self, tenant_id: str, conversation_id: str, user_id: str, peer_id: str, stamp: str
    ) -> None:
        if await self._state.clear_if(self.key(tenant_id, conversation_id, user_id), stamp):
            await self._relay(tenant_id, conversation_id, user_id, peer_id, typing=False)

    def _cancel_timer(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def _relay(
        self, tenant_id: str, conversation_id: str, user_id: str, peer_id: str, *, typing: bool
    ) -> None:
        await self._realtime.to_user(
            tenant_id=tenant_id,
            user_id=peer_id,
            event="typing",
            data={"conversation_id": conversation_id, "user_id": user_id, "typing": typing},
            namespace=CHAT_NAMESPACE,
        )

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
