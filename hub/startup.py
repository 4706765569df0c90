"""What a long-running command does around its work: checks before it starts (each failure
a :class:`StartupError` with one line saying what to fix) and stopping on a signal."""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.settings import StartupError

REDIS_CHECK_SECONDS = 5.0
DATABASE_CHECK_SECONDS = 5.0


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


async def database_problem(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    """A heartbeat probe: None when the database answers a query within a few seconds."""
    try:
        async with asyncio.timeout(DATABASE_CHECK_SECONDS), sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure to answer is what the probe reports
        return f"database: {type(exc).__name__}: {exc}"
    return None


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: how a worker or consumer process learns to stop
    (finish what it has in hand, then exit) instead of dying mid-batch."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
