"""Small helpers every service shares: timestamps, page sizes, dialect-specific INSERTs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (SQLite hands back naive datetimes; they are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def clamp_limit(limit: int | None) -> int:
    """A page size within 1..100 (20 when not given): out-of-range asks are clamped."""
    return DEFAULT_PAGE_SIZE if limit is None else max(1, min(MAX_PAGE_SIZE, limit))


def insert_for(session: AsyncSession) -> Any:
    """The dialect's INSERT construct, which has ON CONFLICT (PostgreSQL or SQLite)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"
