"""Run Alembic programmatically: ``notifyhub migrate``, the embedded auto-migrate, and the
schema check behind ``/readyz``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

import migrations
from db.outage import causes

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent

# Each connection attempt while waiting is bounded, so a host that drops packets (rather than
# refusing) is retried too instead of hanging for asyncpg's 60 s default.
CONNECT_ATTEMPT_TIMEOUT_SECONDS = 5.0
RETRY_DELAY_SECONDS = 0.5
MAX_RETRY_DELAY_SECONDS = 3.0
# SQLSTATEs that waiting cannot fix: no such database; bad password, unknown role.
INVALID_CATALOG_NAME = "3D000"
AUTHENTICATION_FAILED = frozenset({"28P01", "28000"})


class DatabaseNotReady(RuntimeError):
    """The database cannot be migrated as configured; the message is one actionable line."""


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py reads the URL from here rather than from Settings, so tests can aim it anywhere.
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    """Bring the database to the newest schema; a no-op when it is already there.

    Synchronous (Alembic runs its own event loop in env.py): async callers use
    ``asyncio.to_thread``. A database error (connection lost, no permission to create
    tables) becomes :class:`DatabaseNotReady` naming it in one line.
    """
    try:
        if database_url.startswith("sqlite"):
            _prepare_sqlite_file(database_url)
        command.upgrade(alembic_config(database_url), "head")
    except (DBAPIError, OSError) as exc:
        raise DatabaseNotReady(
            f"migration of {_where(database_url)} failed: {_reason(exc)}"
        ) from exc


def wait_for_database(database_url: str, *, timeout: float) -> None:
    """Return once the database accepts a connection; retry for up to ``timeout`` seconds.

    Only failures that go away by themselves are retried: nothing listening yet, the server
    still starting up (PostgreSQL's Docker image runs its init server on the Unix socket
    only), too many connections. A wrong password, an unknown role or a missing database
    fail at once: waiting would not fix them. SQLite needs no wait.
    """
    if make_url(database_url).get_backend_name() == "sqlite":
        return
    asyncio.run(_wait_for_postgres(database_url, timeout))


async def _wait_for_postgres(database_url: str, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    delay = RETRY_DELAY_SECONDS
    announced = False
    while True:
        remaining = deadline - time.monotonic()
        try:
            await _connect_once(
                database_url, max(0.5, min(CONNECT_ATTEMPT_TIMEOUT_SECONDS, remaining))
            )
            return
        except (DBAPIError, OSError, TimeoutError) as exc:
            permanent = _permanent_problem(database_url, exc)
            if permanent is not None:
                raise DatabaseNotReady(permanent) from exc
            if time.monotonic() + delay > deadline:
                raise DatabaseNotReady(
                    f"{_where(database_url)} did not accept connections within {wait_seconds:g}s "
                    f"({_reason(exc)}): start it or fix NOTIFYHUB_DATABASE_URL; wait longer "
                    "with --wait SECONDS or NOTIFYHUB_MIGRATE_WAIT_SECONDS"
                ) from exc
            if not announced:
                # One line when the wait starts, so a compose log shows why migrate is slow.
                log.info(
                    "waiting up to %gs for %s (%s)",
                    wait_seconds,
                    _where(database_url),
                    _reason(exc),
                )
                announced = True
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)


async def _connect_once(database_url: str, attempt_seconds: float) -> None:
    engine = create_async_engine(
        database_url, poolclass=NullPool, connect_args={"timeout": attempt_seconds}
    )
    try:
        async with asyncio.timeout(attempt_seconds + 1):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def _permanent_problem(database_url: str, exc: BaseException) -> str | None:
    """A one-line explanation when waiting cannot help, else None."""
    url = make_url(database_url)
    for cause in causes(exc):
        # asyncpg's errors carry PostgreSQL's SQLSTATE; asyncpg ships no type hints.
        sqlstate = getattr(cause, "sqlstate", None)
        if sqlstate == INVALID_CATALOG_NAME:
            return (
                f'database "{url.database}" does not exist on {_where(database_url)}: create '
                f"it (createdb -h {url.host or 'HOST'} -U {url.username or 'USER'} "
                f"{url.database}) or fix the database name in NOTIFYHUB_DATABASE_URL"
            )
        if sqlstate in AUTHENTICATION_FAILED:
            return (
                f"{_where(database_url)} refused user {url.username!r}: {_first_line(cause)}; "
                "fix the user or password in NOTIFYHUB_DATABASE_URL"
            )
    return None


def current_revision(database_url: str) -> str | None:
    """The revision the database is at (None for an empty database)."""

    async def read() -> str | None:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


@cache
def _script() -> ScriptDirectory:
    # Parsing the migration files takes milliseconds; they never change in a running process.
    return ScriptDirectory.from_config(alembic_config(""))


def schema_problem(current: tuple[str, ...]) -> str | None:
    """Why a database at revisions ``current`` is behind this code's migrations, or None.

    A revision this code does not know is newer code's migration: during a rolling upgrade
    the schema is ahead, and migrations only add (README, Upgrading), so that is ready.
    """
    script = _script()
    heads = set(script.get_heads())
    if set(current) == heads:
        return None
    known = {revision.revision for revision in script.walk_revisions()}
    if current and not set(current) <= known:
        return None
    at = ", ".join(current) if current else "no schema"
    return (
        f"database is at {at}, this code needs {', '.join(sorted(heads))}: run `notifyhub migrate`"
    )


class SchemaCheck:
    """Whether the database schema is at this code's head, re-read at most every ``ttl``.

    ``/readyz`` is probed every few seconds by every load balancer and orchestrator; the
    schema changes only when someone migrates, so a brief cache is plenty.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._ttl = ttl_seconds
        self._clock = clock
        self._checked_at: float | None = None
        self._problem: str | None = None

    async def problem(self) -> str | None:
        """None when the schema is current; else one line saying what to do."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._ttl:
            return self._problem
        async with self._engine.connect() as connection:
            current = await connection.run_sync(_current_heads)
        self._problem = schema_problem(current)
        self._checked_at = now
        return self._problem


def _current_heads(connection: Connection) -> tuple[str, ...]:
    # An absent alembic_version table reads as no revision at all.
    return tuple(MigrationContext.configure(connection).get_current_heads())


def _prepare_sqlite_file(database_url: str) -> None:
    path = database_url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        # Open it once synchronously: a file that cannot be opened fails here, cleanly,
        # rather than inside aiosqlite's thread, which then dies noisily at exit.
        import sqlite3

        try:
            sqlite3.connect(path).close()
        except sqlite3.Error as exc:
            raise OSError(f"cannot open {path}: {exc}") from exc


def _where(database_url: str) -> str:
    """The database a URL names, for messages: never its password."""
    url: URL = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"SQLite database {url.database}"
    return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _reason(exc: BaseException) -> str:
    """The innermost useful message: asyncpg's or the OS's, not SQLAlchemy's wrapper."""
    innermost = exc
    for cause in causes(exc):
        if not isinstance(cause, DBAPIError):
            innermost = cause
            break
    if isinstance(innermost, TimeoutError):
        return "timed out"
    return f"{type(innermost).__name__}: {_first_line(innermost)}"
