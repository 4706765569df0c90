"""What every benchmark records about the machine and the code, and how it waits for quiet."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def git_state(*paths: str) -> tuple[str | None, list[str]] | None:
    """HEAD's commit and which of ``paths`` differ from it (None without git)."""
    git = shutil.which("git")
    if git is None:
        return None

    def run(*arguments: str) -> str:
        return subprocess.run(  # noqa: S603 - git, fixed arguments
            [git, *arguments],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--", *paths)
        return head.strip() or None, [line[3:] for line in dirty.splitlines()]
    return None


def code_version() -> dict[str, Any]:
    """The commit of the hub under test and which of its files differ from it."""
    state = git_state("hub", "api", "db", "migrations", "tasks")
    if state is None:
        return {}
    commit, changed = state
    return {"commit": commit, "uncommitted_hub_changes": changed}


def machine_info(packages: Sequence[str]) -> dict[str, Any]:
    """Cores, CPU, platform, Python and the versions of ``packages``."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: package_version(name) for name in packages},
    }


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; OSError when it is gone."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def core_times() -> dict[str, tuple[int, int]]:
    """Per core ``(busy, total)`` jiffies from /proc/stat."""
    cores: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *rest = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in rest]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            cores[name] = (sum(values[:8]) - idle, sum(values[:8]))
    return cores


async def wait_for_quiet(threshold: float, limit: float) -> dict[str, Any]:
    """Wait until the cores are nearly idle (other jobs on the machine); say if they never were."""
    started = time.monotonic()
    while True:
        before = core_times()
        await asyncio.sleep(0.5)
        after = core_times()
        busy = sum(
            (after[n][0] - b0) / max(1, after[n][1] - t0)
            for n, (b0, t0) in before.items()
            if n in after
        )
        waited = time.monotonic() - started
        if busy <= threshold or waited >= limit:
            return {
                "busy_cores": round(busy, 3),
                "waited_s": round(waited, 1),
                "quiet": busy <= threshold,
            }


class CpuUse(NamedTuple):
    """CPU seconds spent over a window."""

    processes: tuple[float, ...]  # by each of the processes watched, in their order
    own: float  # by this process
    busy: float  # by all the cores together, whoever ran on them
    core_busy: dict[str, float]  # the busy share of each core's time


@dataclass(frozen=True)
class CpuWindow:
    """What the CPU did between ``CpuWindow.begin(pid, ...)`` and ``end()``."""

    pids: tuple[int, ...]
    processes: tuple[float, ...]
    own: float
    cores: dict[str, tuple[int, int]]

    @classmethod
    def begin(cls, *pids: int) -> CpuWindow:
        processes = tuple(process_cpu_seconds(pid) for pid in pids)
        return cls(pids, processes, own_cpu_seconds(), core_times())

    def end(self) -> CpuUse:
        processes = tuple(
            process_cpu_seconds(pid) - before
            for pid, before in zip(self.pids, self.processes, strict=True)
        )
        own = own_cpu_seconds() - self.own
        cores = core_times()
        busy = sum(cores[n][0] - b0 for n, (b0, _t0) in self.cores.items() if n in cores)
        core_busy = {
            name: round((cores[name][0] - b0) / max(1, cores[name][1] - t0), 3)
            for name, (b0, t0) in self.cores.items()
            if name in cores
        }
        return CpuUse(processes, own, busy / CLK_TCK, core_busy)
