"""Counting the SQL statements an engine runs: how tests hold batch paths to a constant
number of statements whatever the batch's size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

StatementLog = Callable[[AsyncEngine], list[str]]


@pytest.fixture
def count_statements() -> Iterator[StatementLog]:
    """``count_statements(engine)``: a list that receives the text of every statement
    ``engine`` runs from now on, until the test ends."""
    listening: list[tuple[AsyncEngine, Any]] = []

    def attach(engine: AsyncEngine) -> list[str]:
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])  # (connection, cursor, statement, ...)

        event.listen(engine.sync_engine, "before_cursor_execute", record)
        listening.append((engine, record))
        return statements

    yield attach
    for engine, record in listening:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
