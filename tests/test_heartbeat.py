"""Healthchecks of ``worker`` and ``consume`` (no HTTP port): a heartbeat file they keep
fresh only while their dependencies answer, and ``notifyhub healthcheck`` that reads it.
Each check is shown to pass when the process is healthy and to fail when it is not."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hub.heartbeat import heartbeat_problem
from tests.harness.hub import SettingsFactory, settings_environment
from tests.harness.kafka import KafkaTopics
from tests.harness.ports import free_port
from tests.harness.processes import NOTIFYHUB, clean_environment, run_cli, terminate_all

INTERVAL = "0.3"
Starter = Callable[..., subprocess.Popen[str]]


@pytest.fixture
async def processes() -> AsyncIterator[Starter]:
    """Start ``notifyhub`` child processes; SIGTERM (then SIGKILL) after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [NOTIFYHUB, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(process)
        return process

    yield start
    await terminate_all(started, wait=20)


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("healthcheck", env=env, timeout=30)


async def until_health(env: dict[str, str], healthy: bool, *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(healthcheck, env)
        if (result.returncode == 0) is healthy:
            if not healthy:
                assert result.returncode == 1, result.stderr
                assert "Traceback" not in result.stderr
                assert result.stderr.startswith("notifyhub healthcheck: unhealthy:")
            return
        assert time.monotonic() < deadline, (
            f"still {'un' if healthy else ''}healthy after {timeout}s: {result.stderr}"
        )
        await asyncio.sleep(0.3)


def heartbeat_env(env: dict[str, str], path: Path) -> dict[str, str]:
    return {
        **env,
        "NOTIFYHUB_HEARTBEAT_FILE": str(path),
        "NOTIFYHUB_HEARTBEAT_INTERVAL_SECONDS": INTERVAL,
    }


def test_heartbeat_freshness(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    assert "no heartbeat" in (heartbeat_problem(path, max_age_seconds=5) or "")
    path.touch()
    assert heartbeat_problem(path, max_age_seconds=5) is None
    old = time.time() - 60
    os.utime(path, (old, old))
    assert "60s old" in (heartbeat_problem(path, max_age_seconds=5) or "")


def test_healthcheck_without_a_heartbeat_file_is_a_configuration_error() -> None:
    result = healthcheck(clean_environment())
    assert result.returncode == 2
    assert "NOTIFYHUB_HEARTBEAT_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_healthcheck_of_a_process_that_never_ran_fails(tmp_path: Path) -> None:
    result = healthcheck(heartbeat_env(clean_environment(), tmp_path / "beat"))
    assert result.returncode == 1
    assert "no heartbeat" in result.stderr


async def test_worker_is_healthy_until_redis_goes_away(
    tmp_path: Path,
    processes: Starter,
    hub_settings: SettingsFactory,
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, redis_process = own_redis
    env = heartbeat_env(
        {**clean_environment(), **settings_environment(hub_settings(redis_url=url))},
        tmp_path / "worker.beat",
    )
    processes("worker", env=env)
    await until_health(env, healthy=True)
    redis_process.kill()
    redis_process.wait()
    await until_health(env, healthy=False)


async def test_stopped_worker_is_unhealthy_at_once(
    tmp_path: Path, processes: Starter, hub_settings: SettingsFactory
) -> None:
    env = heartbeat_env(
        {**clean_environment(), **settings_environment(hub_settings())}, tmp_path / "w.beat"
    )
    worker = processes("worker", env=env)
    await until_health(env, healthy=True)
    worker.send_signal(signal.SIGTERM)
    await asyncio.to_thread(worker.communicate, None, 20)
    assert worker.returncode == 0
    result = healthcheck(env)
    assert result.returncode == 1 and "no heartbeat" in result.stderr


async def test_consumer_is_healthy_while_consuming_and_not_without_kafka(
    tmp_path: Path, processes: Starter, hub_settings: SettingsFactory, kafka: KafkaTopics
) -> None:
    settings = kafka.settings(hub_settings)
    env = heartbeat_env(
        {**clean_environment(), **settings_environment(settings)}, tmp_path / "consumer.beat"
    )
    processes("consume", env=env)
    await until_health(env, healthy=True, timeout=30)

    # The same consumer pointed at a Kafka that is not there runs (it retries), unhealthy.
    lost = {
        **env,
        "NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "NOTIFYHUB_HEARTBEAT_FILE": str(tmp_path / "lost.beat"),
    }
    lost_consumer = processes("consume", env=lost)
    await asyncio.sleep(3)
    assert lost_consumer.poll() is None, "it keeps retrying Kafka"
    await until_health(lost, healthy=False)
