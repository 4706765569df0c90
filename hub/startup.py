"""Checks a long-running command makes before it starts working: each failure is a
:class:`StartupError` with one line saying what to fix."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.settings import StartupError

REDIS_CHECK_SECONDS = 5.0


def redis_location(url: str) -> str:
    """host:port/db of a Redis URL, for messages: never its password."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{database}"


async def require_redis(url: str) -> None:
    """Return when Redis at ``url`` answers PING; else a StartupError naming the setting."""
    client: Redis = Redis.from_url(
        url, socket_connect_timeout=REDIS_CHECK_SECONDS, socket_timeout=REDIS_CHECK_SECONDS
    )
    try:
        await asyncio.wait_for(client.ping(), timeout=REDIS_CHECK_SECONDS * 2)
    except (RedisError, OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise StartupError(
            f"Redis at {redis_location(url)} does not answer ({reason}): start it or fix "
            "NOTIFYHUB_REDIS_URL"
        ) from None
    finally:
        await client.aclose()


async def redis_problem(client: Redis) -> str | None:
    """A heartbeat probe: None when Redis answers PING."""
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"Redis: {type(exc).__name__}: {exc}"
    return None
