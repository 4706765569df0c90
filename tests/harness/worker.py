"""``notifyhub worker`` child processes for the email tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hub.settings import Settings
from tests.harness.hub import settings_environment

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
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
