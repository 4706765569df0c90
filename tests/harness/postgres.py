"""A PostgreSQL server of the test's own, so the test may kill and restart it.

initdb refuses to run as root, so when the suite runs as root the server runs as the
``postgres`` OS user, in a directory that user owns.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from db.migrate import upgrade_to_head
from tests.harness.ports import free_port


def postgres_bin_dir() -> Path:
    """The newest installed server binaries (Debian keeps them off PATH)."""
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(found, "initdb").is_file():
            return Path(found)
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.fail("PostgreSQL server binaries (initdb) are not installed", pytrace=False)
    return Path(initdb).parent


class PrivatePostgres:
    """One cluster in a temporary directory on a free loopback port; trust auth."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="notifyhub-pg-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as_user = {"user": "postgres", "group": "postgres"}
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        subprocess.run(
            [
                str(self.bin / "initdb"),
                *("-D", str(self.data), "-U", "postgres", "-A", "trust"),
                *("--no-sync", "--no-instructions"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            **self._as_user,
        )

    def start(self) -> None:
        """Start the server (crash recovery included after a kill) without waiting."""
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                *("-D", str(self.data), "-p", str(self.port)),
                *("-c", "listen_addresses=127.0.0.1"),
                *("-c", f"unix_socket_directories={self.root}"),
                *("-c", "fsync=off", "-c", "max_connections=100"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group, so a kill takes the backends along, as a crash would.
            start_new_session=True,
            **self._as_user,
        )

    async def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until the server accepts a query; return the monotonic time it first did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = await asyncpg.connect(self.dsn, timeout=1)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)
                continue
            ready = time.monotonic()
            await connection.close()
            return ready

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
async def own_postgres() -> AsyncIterator[PrivatePostgres]:
    """A private PostgreSQL server, migrated to head with Alembic, removed afterwards."""
    server = PrivatePostgres()
    try:
        await asyncio.to_thread(server.init)
        server.start()
        await server.wait_ready()
        await asyncio.to_thread(upgrade_to_head, server.url)
        yield server
    finally:
        server.remove()
