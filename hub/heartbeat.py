"""Liveness for processes without an HTTP port (``worker``, ``consume``): a heartbeat file.

The process checks its own dependencies every interval and touches the file only when they
answer; ``notifyhub healthcheck`` (a container healthcheck) fails when the file is older than
a few intervals. So the check fails when the process hangs, dies, or cannot reach what it
needs, which "is PID 1 alive" never does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

# A probe answers None when healthy, else one line saying what is wrong.
Probe = Callable[[], Awaitable[str | None]]

# Missed beats tolerated before the file counts as stale: one slow probe is not an outage.
STALE_AFTER_INTERVALS = 3


async def run_heartbeat(
    path: Path, *, interval_seconds: float, probe: Probe, stop: asyncio.Event
) -> None:
    """Touch ``path`` every interval while ``probe`` says healthy, until ``stop``.

    A file left by an earlier run of the container is removed first, and the file is
    removed on stop, so neither counts as this process being healthy.
    """
    _remove(path)
    healthy: bool | None = None
    try:
        while not stop.is_set():
            try:
                problem = await asyncio.wait_for(probe(), timeout=interval_seconds)
            except TimeoutError:
                problem = f"health probe took longer than {interval_seconds:g}s"
            except Exception as exc:  # a failing probe is exactly what this reports
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                _touch(path)
            # One log line per transition, not one per beat during a long outage.
            if healthy is not (problem is None):
                if problem is None:
                    log.info("healthy: heartbeat %s", path)
                else:
                    log.warning("unhealthy, heartbeat paused: %s", problem)
            healthy = problem is None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_seconds)
    finally:
        _remove(path)


def heartbeat_problem(
    path: Path, *, max_age_seconds: float, now: Callable[[], float] = time.time
) -> str | None:
    """None when ``path`` was touched within ``max_age_seconds``; else why not, in one line."""
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path}: the process is starting, stopped, or unhealthy"
    age = now() - modified
    if age > max_age_seconds:
        return f"heartbeat {path} is {age:.0f}s old (limit {max_age_seconds:g}s)"
    return None


def _touch(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path)
    except OSError as exc:  # a read-only mount must not stop the work itself
        log.warning("cannot write heartbeat %s: %s", path, exc)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
