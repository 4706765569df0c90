"""``notifyhub migrate`` on PostgreSQL and SQLite: empty database to head, then a no-op; it
waits for a database that is not up yet, and says in one line what is wrong when it cannot."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.harness.ports import free_port
from tests.harness.processes import NOTIFYHUB, assert_startup_error, clean_environment, run_cli
from tests.harness.proxy import TcpProxy
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


def unreachable_url() -> str:
    return f"postgresql+asyncpg://postgres:s3cret-pw@127.0.0.1:{free_port()}/notifyhub"


@pytest.mark.parametrize("how", ["flag", "setting"])
def test_migrate_waits_for_an_unreachable_database_then_gives_one_line(how: str) -> None:
    env = clean_environment(NOTIFYHUB_DATABASE_URL=unreachable_url())
    args = ["migrate"]
    if how == "flag":
        args += ["--wait", "2"]
    else:
        env["NOTIFYHUB_MIGRATE_WAIT_SECONDS"] = "2"
    started = time.monotonic()
    result = run_cli(*args, env=env)
    elapsed = time.monotonic() - started
    line = assert_startup_error(
        result, "did not accept connections within 2s", "NOTIFYHUB_DATABASE_URL", "--wait"
    )
    assert "s3cret-pw" not in line
    assert 1.5 < elapsed < 15, f"waited {elapsed:.1f}s"


async def test_migrate_completes_once_the_database_comes_up(empty_postgres_database: str) -> None:
    url = make_url(empty_postgres_database)
    # A proxy that is not listening yet: PostgreSQL "starting" as seen from the client.
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = url.set(host="127.0.0.1", port=proxy.port)
    env = clean_environment(
        NOTIFYHUB_DATABASE_URL=through_proxy.render_as_string(hide_password=False)
    )
    process = subprocess.Popen(
        [NOTIFYHUB, "migrate", "--wait", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await asyncio.sleep(2)
        assert process.poll() is None, "migrate gave up instead of waiting"
        await proxy.start()
        stdout, stderr = await asyncio.to_thread(process.communicate, None, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await proxy.stop()
    assert process.returncode == 0, stderr
    assert "waiting up to 30s" in stderr
    tables, version, _ = await postgres_schema(empty_postgres_database)
    assert tables >= EXPECTED_TABLES
    assert f"database at revision {version}" in stdout


def test_migrate_a_missing_database_fails_at_once_saying_how_to_create_it(
    postgres_url: str,
) -> None:
    missing = make_url(postgres_url).set(database="notifyhub_no_such_db")
    env = clean_environment(NOTIFYHUB_DATABASE_URL=missing.render_as_string(hide_password=False))
    started = time.monotonic()
    result = run_cli("migrate", "--wait", "30", env=env)
    assert_startup_error(result, 'database "notifyhub_no_such_db" does not exist', "createdb")
    assert time.monotonic() - started < 10, "waiting cannot create a database"


def test_migrate_with_an_unknown_role_fails_at_once(postgres_url: str) -> None:
    stranger = make_url(postgres_url).set(username="notifyhub_nobody")
    env = clean_environment(NOTIFYHUB_DATABASE_URL=stranger.render_as_string(hide_password=False))
    assert_startup_error(
        run_cli("migrate", "--wait", "30", env=env, timeout=20),
        "refused user 'notifyhub_nobody'",
        "NOTIFYHUB_DATABASE_URL",
    )


def test_schema_problem_names_behind_and_accepts_ahead() -> None:
    from db.migrate import _script, schema_problem

    heads = tuple(_script().get_heads())
    assert schema_problem(heads) is None
    problem = schema_problem(())
    assert problem is not None and "no schema" in problem and "notifyhub migrate" in problem
    first = [rev.revision for rev in _script().walk_revisions()][-1]
    problem = schema_problem((first,))
    assert problem is not None and f"at {first}" in problem
    # A revision this code does not know is a newer deploy's: ready (migrations only add).
    assert schema_problem(("9999_from_the_future",)) is None


async def test_schema_check_is_cached_briefly(empty_postgres_database: str) -> None:
    from db.engine import make_engine
    from db.migrate import SchemaCheck

    now = [0.0]
    engine = make_engine(empty_postgres_database)
    try:
        check = SchemaCheck(engine, ttl_seconds=5, clock=lambda: now[0])
        assert await check.problem() is not None
        migrated = run_cli(
            "migrate", env=clean_environment(NOTIFYHUB_DATABASE_URL=empty_postgres_database)
        )
        assert migrated.returncode == 0, migrated.stderr
        now[0] = 4.0
        assert await check.problem() is not None, "cached"
        now[0] = 5.5
        assert await check.problem() is None
    finally:
        await engine.dispose()
