"""``notifyhub worker`` child processes and the settings of the email tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hub.settings import Settings
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import SettingsFactory, settings_environment
from tests.harness.processes import terminate_all

WorkerStarter = Callable[[Settings], Awaitable[subprocess.Popen[bytes]]]


@pytest.fixture
async def worker_process() -> AsyncIterator[WorkerStarter]:
    """Start ``python -m hub worker`` processes; all are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    async def start(settings: Settings) -> subprocess.Popen[bytes]:
        env = {**os.environ, **settings_environment(settings)}
        process = subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=env)
        started.append(process)
        await asyncio.sleep(0)  # the worker is ready once it reads; tasks wait in the stream
        return process

    yield start
    await terminate_all(started, wait=15)


@pytest.fixture
def email_settings(
    hub_settings: SettingsFactory, auth_service: AuthServiceStub
) -> Callable[..., Settings]:
    """Settings for a hub + worker pair with a task queue of this test's own."""
    channel = f"notifyhub-test-{uuid.uuid4().hex[:12]}"

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "socketio_channel": channel,
            "auth_service_url": auth_service.url,
            "auth_service_cache_seconds": 0.0,
            "email_retry_base_seconds": 0.2,
            "email_retry_max_seconds": 1.0,
            "email_lease_seconds": 1.0,
            "email_task_reclaim_seconds": 2.0,
            "worker_shutdown_seconds": 3.0,
        }
        values.update(overrides)
        return hub_settings(**values)

    return build
