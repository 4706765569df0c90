"""What a benchmark's ``serve`` processes run on: a fresh migrated PostgreSQL database and a
Redis server of the run's own (to kill and restart at will), with their Settings."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from hub.settings import Settings
from tests.harness.services import PrivateRedis, migrated_database
from tests.harness.tokens import TEST_JWT_SECRET


@contextlib.asynccontextmanager
async def private_services(
    database_url: str, **overrides: Any
) -> AsyncIterator[tuple[Settings, PrivateRedis]]:
    """Settings for a hub on both (``overrides`` replace fields), and the Redis; both are
    gone afterwards. ``database_url`` names a server where the user may create databases."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    redis = PrivateRedis(binary)
    await redis.start()
    dsn = make_url(database_url).set(drivername="postgresql")
    admin = await asyncpg.connect(dsn.render_as_string(hide_password=False), timeout=5)
    try:
        async with migrated_database(admin, database_url, prefix="notifyhub_bench") as url:
            values: dict[str, Any] = {
                "env": "test",
                "database_url": url,
                "redis_url": redis.url,
                "socketio_channel": f"bench-{uuid.uuid4().hex[:8]}",
                "jwt_secret": TEST_JWT_SECRET,
                "auto_migrate": False,
            }
            yield Settings(_env_file=None, **(values | overrides)), redis  # type: ignore[call-arg]
    finally:
        redis.kill()
        await admin.close()
