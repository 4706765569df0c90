"""Child processes of a benchmark: started pinned to a core, their logs and profiles."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any


def pin(cpu: int) -> bool:
    """Pin this process to one core (any online core: a child inherits its parent's mask)."""
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return False
    return True


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` under ``taskset -c cpu`` (unchanged without a core or without taskset)."""
    taskset = shutil.which("taskset")
    if cpu is None or taskset is None:
        return command  # pinned with sched_setaffinity right after start instead
    return [taskset, "-c", str(cpu), *command]


def spawn_pinned(
    command: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    cpu: int | None,
    append: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own on core ``cpu``, output into ``log_path``."""
    with log_path.open("ab" if append else "wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter, scripts, CLI and Tansu
            pinned(command, cpu),
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if cpu is not None and shutil.which("taskset") is None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(process.pid, {cpu})
    return process


def log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def profile_summary(path: Path, lines: int) -> dict[str, Any]:
    """The top functions of a cProfile dump, by own time and by cumulative time."""
    import io
    import pstats

    summary: dict[str, Any] = {"file": str(path)}
    for order in ("tottime", "cumtime"):
        out = io.StringIO()
        pstats.Stats(str(path), stream=out).sort_stats(order).print_stats(lines)
        text = out.getvalue()
        (path.parent / f"{path.stem}.{order}.txt").write_text(text)
        summary[order] = [row for row in text.splitlines() if row.strip()][-lines:]
    return summary
