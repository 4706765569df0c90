"""``notifyhub serve``: embedded defaults, readiness, shutdown."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.harness.hub import RunningHub, SettingsFactory
from tests.harness.ports import free_port, wait_for_port_async
from tests.harness.processes import NOTIFYHUB, clean_environment, run_cli


async def get_json(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def test_serve_on_embedded_defaults_just_works(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [NOTIFYHUB, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        await wait_for_port_async(port, timeout=30)
        assert await get_json(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        status, body = await get_json(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        assert body["checks"] == {"database": "ok", "schema": "ok"}
        assert (tmp_path / "notifyhub.db").is_file(), "the SQLite database was created"
    finally:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, None, 15)
    assert process.returncode == 0, output
    assert time.monotonic() - started < 10
    assert "notifyhub stopped" in output


async def test_python_dash_m_hub_serves(tmp_path: Path) -> None:
    import sys

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hub"],
        cwd=tmp_path,
        env=clean_environment(NOTIFYHUB_PORT=str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_port_async(port, timeout=30)
        assert (await get_json(f"http://127.0.0.1:{port}/healthz"))[0] == 200
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 15)
    assert process.returncode == 0


async def test_readyz_reports_postgres_and_redis(hub: RunningHub) -> None:
    status, body = await get_json(f"{hub.url}/readyz")
    assert status == 200
    assert body["checks"] == {"database": "ok", "schema": "ok", "redis": "ok"}


async def test_readyz_is_503_naming_redis_when_redis_stops(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, redis_process = own_redis
    hub = await hub_factory(hub_settings(redis_url=url))
    assert (await get_json(f"{hub.url}/readyz"))[0] == 200
    redis_process.kill()
    redis_process.wait()
    status, body = await get_json(f"{hub.url}/readyz")
    assert status == 503
    assert body["failing"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error")
    # The process itself is still alive.
    assert (await get_json(f"{hub.url}/healthz"))[0] == 200


async def test_readyz_is_503_naming_the_database_when_it_is_unreachable(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory
) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    hub = await hub_factory(hub_settings(database_url=dead))
    status, body = await get_json(f"{hub.url}/readyz")
    assert status == 503
    assert body["failing"] == ["database"]


async def test_redis_outage_broadcast_is_503_and_notifications_are_still_stored(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    own_redis: tuple[str, subprocess.Popen[bytes]],
    tenant: str,
) -> None:
    from tests.harness.api import ApiClient

    url, redis_process = own_redis
    hub = await hub_factory(hub_settings(redis_url=url))
    redis_process.kill()
    redis_process.wait()
    service = ApiClient.for_service(hub.url, tenant)
    status, body = await service.post("/api/broadcasts/", {"title": "t", "body": "b"})
    assert (status, body["error"]["code"]) == (503, "unavailable")
    await service.notify(["u1"])  # 201: stored even though live delivery is down
    status, page = await ApiClient.for_user(hub.url, tenant, "u1").get("/api/notifications/")
    assert (status, len(page["items"])) == (200, 1)


async def test_readyz_is_503_until_the_schema_is_migrated(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, postgres_url: str
) -> None:
    """An empty database answers ``SELECT 1`` but every real query fails: not ready."""
    import uuid

    import asyncpg
    from sqlalchemy.engine import make_url

    from tests.harness.api import ApiClient
    from tests.harness.services import _asyncpg_dsn

    admin = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    name = f"notifyhub_unmigrated_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        hub = await hub_factory(hub_settings(database_url=url))
        status, body = await get_json(f"{hub.url}/readyz")
        assert status == 503, body
        assert body["failing"] == ["schema"]
        assert body["checks"]["database"] == "ok"
        assert "no schema" in body["checks"]["schema"]
        assert "run `notifyhub migrate`" in body["checks"]["schema"]

        result = await asyncio.to_thread(
            run_cli, "migrate", env=clean_environment(NOTIFYHUB_DATABASE_URL=url)
        )
        assert result.returncode == 0, result.stderr
        # Cached briefly: ready again within the cache interval, without a restart.
        deadline = time.monotonic() + 15
        while (status := (await get_json(f"{hub.url}/readyz"))[0]) != 200:
            assert time.monotonic() < deadline, "still not ready after migrating"
            await asyncio.sleep(0.5)
        status, body = await get_json(f"{hub.url}/readyz")
        assert (status, body["checks"]["schema"]) == (200, "ok")
        # The API works on the migrated schema.
        service = ApiClient.for_service(hub.url, "t-schema")
        await service.notify(["u1"])
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
