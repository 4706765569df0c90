"""Telling a database outage from a bug, and logging an outage once, not once per request.

During an outage every request that touches the database fails; what the client needs is
a 503 it may retry, and what the operator needs is one line when the database goes away
and one when it is back. :func:`is_unavailable` tells the callers (REST middleware, socket
handlers) which failures mean "the database is not there"; :class:`DatabaseStatus`,
hooked into the engine, sees every connection attempt and every disconnect and logs the
transitions.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)


class DatabaseUnreachable(ConnectionError):
    """A new database connection could not be opened (refused, timed out, shutting down).

    Raised in place of the driver's own error so that a bare ``OSError`` or
    ``TimeoutError`` from elsewhere is never mistaken for a database outage.
    """


# asyncpg errors that mean the server or the link to it is gone, not that the query is bad:
# class 08 (connection exception), 57P01-57P03 (admin/crash shutdown, cannot connect now),
# 53300 (too many connections), and the client-side "connection was closed" mid-query.
_ASYNCPG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached right now (so: 503, retry)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnreachable | sa_exc.TimeoutError):
            return True  # no connection could be opened, or none freed up in time
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True  # SQLAlchemy saw the connection die under the statement
        if isinstance(current, _ASYNCPG_UNAVAILABLE):
            return True
        current = current.__cause__ or current.__context__
    return False


class DatabaseStatus:
    """Whether the database answers, as seen by one engine; logs each change once."""

    def __init__(self, name: str = "database") -> None:
        self.name = name
        self.available = True
        self._down_since = 0.0

    def watch(self, engine: AsyncEngine) -> None:
        """Hook connection attempts, disconnects and successful statements of ``engine``."""
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "do_connect", self._connect)
        event.listen(sync_engine, "handle_error", self._on_error)
        event.listen(sync_engine, "after_cursor_execute", self._on_statement)

    def failed(self, exc: BaseException) -> None:
        if not self.available:
            return
        self.available = False
        self._down_since = time.monotonic()
        log.warning(
            "%s unavailable (%s: %s); answering 503 until it is back",
            self.name,
            type(exc).__name__,
            str(exc).strip()[:200],
        )

    def succeeded(self) -> None:
        if self.available:
            return
        self.available = True
        log.info("%s available again after %.1f s", self.name, time.monotonic() - self._down_since)

    def _connect(
        self, dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any
    ) -> Any:
        # Opening connections ourselves (what SQLAlchemy would do) is the one place that
        # sees every failed attempt: SQLAlchemy raises a refused connect as a bare OSError
        # and fires no error event for it.
        try:
            connection = dialect.connect(*cargs, **cparams)
        except Exception as exc:
            self.failed(exc)
            raise DatabaseUnreachable(f"cannot connect to the {self.name}: {exc}") from exc
        self.succeeded()
        return connection

    def _on_error(self, context: ExceptionContext) -> None:
        # A failed pre-ping only means a pooled connection died earlier (say, the database
        # restarted); the pool replaces it with a fresh one, which is what counts.
        if context.is_disconnect and not context.is_pre_ping:
            self.failed(context.original_exception)

    def _on_statement(self, *_args: Any) -> None:
        if not self.available:
            self.succeeded()
