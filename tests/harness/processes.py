"""Running the ``notifyhub`` CLI as a user would, in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
