"""Engine and session factory built from Settings (PostgreSQL via asyncpg, or SQLite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from hub.settings import Settings


def engine_for(settings: Settings) -> AsyncEngine:
    """The engine every hub process builds from its settings (serve, worker, consume)."""
    return make_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        connect_timeout=settings.database_connect_timeout_seconds,
        pool_timeout=settings.database_pool_timeout_seconds,
    )


def make_engine(
    database_url: str,
    *,
    pool_size: int = 10,
    connect_timeout: float = 3.0,
    pool_timeout: float = 5.0,
) -> AsyncEngine:
    """An async engine tuned for the backend named by the URL."""
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # The timeouts turn an unreachable server into a prompt error.
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        connect_args={"timeout": connect_timeout},
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Replace a pooled connection that died while idle (a database restart) before a request
    sees it. asyncpg learns of a closed socket as soon as the event loop does, so asking it
    costs nothing, where SQLAlchemy's ``pool_pre_ping`` costs three round trips (BEGIN, an
    empty query, ROLLBACK) on every checkout. A connection that dies in a way the socket does
    not show fails its first statement instead: that request gets the usual 503, and the
    pool replaces every connection older than the failure."""
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError("pooled connection was closed")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers and one writer work at once; the embedded profile has both.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
