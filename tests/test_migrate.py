"""``notifyhub migrate`` on PostgreSQL and SQLite: empty database to head, then a no-op."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.harness.processes import clean_environment, run_cli
from tests.harness.services import _asyncpg_dsn

EXPECTED_TABLES = {"alembic_version", "notifications", "notification_counters"}


@pytest.fixture
async def empty_postgres_database(postgres_url: str) -> AsyncIterator[str]:
    admin = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    name = f"notifyhub_empty_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def postgres_schema(url: str) -> tuple[set[str], str, str]:
    connection = await asyncpg.connect(_asyncpg_dsn(url))
    try:
        tables = {
            row["tablename"]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
        # A fingerprint of every column and index, to show the second run changed nothing.
        columns = await connection.fetch(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2"
        )
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        )
        return tables, version, repr(list(map(tuple, columns)) + list(map(tuple, indexes)))
    finally:
        await connection.close()


async def test_migrate_postgres_to_head_then_noop(empty_postgres_database: str) -> None:
    env = clean_environment(NOTIFYHUB_DATABASE_URL=empty_postgres_database)
    first = run_cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "Running upgrade" in first.stderr
    tables, version, fingerprint = await postgres_schema(empty_postgres_database)
    assert tables >= EXPECTED_TABLES
    assert f"database at revision {version}" in first.stdout

    second = run_cli("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert "Running upgrade" not in second.stderr
    assert await postgres_schema(empty_postgres_database) == (tables, version, fingerprint)


def test_migrate_sqlite_to_head_then_noop(tmp_path: Path) -> None:
    import sqlite3

    database = tmp_path / "nested" / "hub.db"
    env = clean_environment(NOTIFYHUB_DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    first = run_cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "Running upgrade" in first.stderr

    def schema() -> list[tuple[str, str]]:
        with sqlite3.connect(database) as connection:
            return connection.execute(
                "SELECT name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()

    before = schema()
    assert {name for name, _ in before} >= EXPECTED_TABLES
    second = run_cli("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert "Running upgrade" not in second.stderr
    assert schema() == before
