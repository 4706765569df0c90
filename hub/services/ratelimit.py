"""Token buckets per key (e.g. per user sending messages): in-process, or shared in Redis so
that every node of the hub counts against the same bucket."""

from __future__ import annotations

import time
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.errors import RateLimited, Unavailable


class RateLimiter(Protocol):
    async def take(self, key: str) -> None:
        """Take one token for ``key`` or raise :class:`RateLimited` with the wait."""


class LocalTokenBucket:
    def __init__(self, *, rate_per_second: float, burst: int) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, key: str) -> None:
        now = time.monotonic()
        tokens, updated = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - updated) * self._rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            raise RateLimited((1 - tokens) / self._rate)
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 100_000:  # forget idle users; a full bucket is the default
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}


# Atomic refill-and-take on Redis's own clock (nodes' clocks may differ).
_TAKE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now_ms
tokens = math.min(burst, tokens + (now_ms - ts) * rate / 1000)
local wait_ms = 0
if tokens < 1 then
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait_ms
"""


class RedisTokenBucket:
    def __init__(self, redis: Redis, *, prefix: str, rate_per_second: float, burst: int) -> None:
        self._script = redis.register_script(_TAKE)
        self._prefix = prefix
        self._rate = rate_per_second
        self._burst = burst

    async def take(self, key: str) -> None:
        try:
            wait_ms = await self._script(
                keys=[f"{self._prefix}{key}"], args=[self._rate, self._burst]
            )
        except (RedisError, OSError) as exc:
            # The limit cannot be checked: 503 (retry later), not a 500 for the client.
            raise Unavailable("sending is unavailable (Redis does not answer)") from exc
        if int(wait_ms) > 0:
            raise RateLimited(int(wait_ms) / 1000)
