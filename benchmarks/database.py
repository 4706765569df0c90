"""The throwaway PostgreSQL databases of a benchmark run, made through an admin DSN."""

from __future__ import annotations

import asyncpg


def asyncpg_dsn(url: str) -> str:
    """``url`` with the plain ``postgresql://`` scheme asyncpg takes (no SQLAlchemy driver)."""
    return "postgresql://" + url.split("://", 1)[1]


def database_url(admin_url: str, name: str, driver: str) -> str:
    """The URL of database ``name`` on the server of ``admin_url``, with scheme ``driver``."""
    base = admin_url.rsplit("/", 1)[0].split("://", 1)[1]
    return f"{driver}://{base}/{name}"


async def admin_execute(admin_url: str, sql: str) -> None:
    """One statement on a connection of its own (CREATE/DROP DATABASE take no transaction)."""
    connection = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def create_database(admin_url: str, name: str) -> None:
    await admin_execute(admin_url, f'CREATE DATABASE "{name}"')


async def drop_database(admin_url: str, name: str) -> None:
    await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
