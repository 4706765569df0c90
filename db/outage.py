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
from collections.abc import Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect, ExceptionContext
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


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps: SQLAlchemy's ``orig``, causes, contexts."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending += [
            current.__cause__,
            current.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached right now (so: 503, retry)."""
    for current in causes(exc):
        if isinstance(current, DatabaseUnreachable | sa_exc.TimeoutError):
            return True  # no connection could be opened, or none freed up in time
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True  # SQLAlchemy saw the connection die under the statement
        if isinstance(current, _ASYNCPG_UNAVAILABLE):
            return True
    return False


_STATEMENT_STARTED = "notifyhub_statement_started"


class DatabaseStatus:
    """Whether the database answers, as seen by one engine; logs each change once.

    An observation counts only if its attempt began after the last change: requests run
    concurrently, so a statement sent just before the database died can still succeed
    after the first failure was seen, and a connect begun during crash recovery can be
    refused after another one got through. Counting those would log the outage as
    several short ones.
    """

    def __init__(self, name: str = "database") -> None:
        self.name = name
        self.available = True
        self._changed_at = 0.0

    def watch(self, engine: AsyncEngine) -> None:
        """Hook connection attempts, disconnects and statements of ``engine``."""
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "do_connect", self._connect)
        event.listen(sync_engine, "handle_error", self._on_error)
        event.listen(sync_engine, "before_cursor_execute", self._before_statement)
        event.listen(sync_engine, "after_cursor_execute", self._after_statement)

    def failed(self, exc: BaseException, *, began: float | None = None) -> None:
        """The database failed an attempt begun at ``began`` (monotonic; None: just now)."""
        if not self.available or (began is not None and began < self._changed_at):
            return
        self.available = False
        self._changed_at = time.monotonic()
        log.warning(
            "%s unavailable (%s: %s); answering 503 until it is back",
            self.name,
            type(exc).__name__,
            str(exc).strip()[:200],
        )

    def succeeded(self, *, began: float) -> None:
        """The database answered an attempt begun at ``began`` (monotonic)."""
        if self.available or began < self._changed_at:
            return
        self.available = True
        now = time.monotonic()
        log.info("%s available again after %.1f s", self.name, now - self._changed_at)
        self._changed_at = now

    def _connect(
        self, dialect: Dialect, _record: ConnectionPoolEntry, cargs: Any, cparams: Any
    ) -> Any:
        # Opening connections ourselves (what SQLAlchemy would do) is the one place that
        # sees every failed attempt: SQLAlchemy raises a refused connect as a bare OSError
        # and fires no error event for it.
        began = time.monotonic()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except Exception as exc:
            self.failed(exc, began=began)
            raise DatabaseUnreachable(f"cannot connect to the {self.name}: {exc}") from exc
        self.succeeded(began=began)
        return connection

    def _on_error(self, context: ExceptionContext) -> None:
        # A failed pre-ping only means a pooled connection died earlier (say, the database
        # restarted); the pool replaces it with a fresh one, which is what counts.
        if context.is_disconnect and not context.is_pre_ping:
            began = context.connection.info.get(_STATEMENT_STARTED) if context.connection else None
            self.failed(context.original_exception, began=began)

    def _before_statement(self, connection: Connection, *_args: Any) -> None:
        connection.info[_STATEMENT_STARTED] = time.monotonic()

    def _after_statement(self, connection: Connection, *_args: Any) -> None:
        if not self.available:
            self.succeeded(began=connection.info.get(_STATEMENT_STARTED, 0.0))
