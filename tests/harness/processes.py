"""Running the ``notifyhub`` CLI as a user would, in a child process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NOTIFYHUB = str(Path(sys.executable).with_name("notifyhub"))


def clean_environment(**extra: str) -> dict[str, str]:
    """The current environment without any NOTIFYHUB_* variable (embedded defaults)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("NOTIFYHUB_")}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NOTIFYHUB, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_startup_error(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """The CLI refused to start as an operator needs: exit code 2, no traceback, and one
    line on stderr that carries every phrase (what is wrong and what to do). Returns it."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("notifyhub")]
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


async def terminate_all(processes: Sequence[subprocess.Popen[Any]], *, wait: float) -> None:
    """SIGTERM every child still running, give them ``wait`` seconds together, then SIGKILL
    the ones that are left (a fixture's teardown must never hang)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.to_thread(process.communicate, None, wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
