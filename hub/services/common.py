"""Small helpers every service shares: timestamps, page sizes, dialect-specific INSERTs."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
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


def dialect_of(session: AsyncSession) -> str:
    return str(session.get_bind().dialect.name)


def insert_for(session: AsyncSession) -> Any:
    """The dialect's INSERT construct, which has ON CONFLICT (PostgreSQL or SQLite)."""
    return postgresql.insert if is_postgresql(session) else sqlite.insert


def is_postgresql(session: AsyncSession) -> bool:
    return dialect_of(session) == "postgresql"


# The rows of many users in one statement with constant SQL text: the (tenant_id, user_id)
# pairs travel as one JSON parameter. (An expanding IN list of pairs is compiled anew for
# every size, and a text[] array parameter is encoded element by element by asyncpg: both
# cost more than the query at 1,000 users.)
USER_KEYS_TABLES = {
    "postgresql": "(SELECT k.value ->> 0 AS tenant_id, k.value ->> 1 AS user_id "
    "FROM jsonb_array_elements(CAST(:user_keys AS jsonb)) AS k)",
    "sqlite": "(SELECT json_extract(value, '$[0]') AS tenant_id, "
    "json_extract(value, '$[1]') AS user_id FROM json_each(:user_keys))",
}
"""Per dialect, a FROM item with columns ``tenant_id, user_id`` made of the parameter of
:func:`user_keys_param`: statements join it to a table's ``(tenant_id, user_id)``."""


def user_keys_param(keys: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The ``:user_keys`` parameter of :data:`USER_KEYS_TABLES` (sorted: one order for every
    caller)."""
    return {"user_keys": orjson.dumps(sorted(keys)).decode()}
