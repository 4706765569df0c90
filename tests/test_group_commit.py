"""Group commit: creates that arrive while a transaction runs share the next one, and each
still gets exactly its own result (ids, suppressed recipients, idempotent replays)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import make_engine, make_session_factory
from hub.delivery.bus import LocalBus
from hub.errors import Unavailable
from hub.rules import NewNotification, NotificationLimits
from hub.services.devices import DeviceService
from hub.services.group_commit import GroupCommit, Sized
from hub.services.notifications import NotificationService
from hub.services.preferences import PreferenceService
from hub.services.pushes import PushService
from hub.services.webhooks import WebhookService
from hub.webhook_urls import check_shape_only
from tests.harness.services import _asyncpg_dsn

# -- the gathering itself, without a database ---------------------------------------------------


class Recorder:
    """A ``run_batch`` that records its batches, takes a moment (so that others gather), and
    refuses any batch holding ``poison``, as a database would refuse one bad row."""

    def __init__(self, *, delay: float = 0.05, poison: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.poison = poison

    async def __call__(self, requests: Sequence[str]) -> list[str]:
        self.batches.append(list(requests))
        await asyncio.sleep(self.delay)
        if self.poison in requests:
            raise ValueError("refused")
        return [f"done:{request}" for request in requests]


async def test_a_lone_request_runs_at_once_and_those_arriving_meanwhile_go_together() -> None:
    recorder = Recorder()
    group: GroupCommit[str, str] = GroupCommit(recorder, max_rows=100)
    first = asyncio.create_task(group.submit(Sized("a", rows=1)))
    await asyncio.sleep(0.01)  # "a" is being written
    rest = [asyncio.create_task(group.submit(Sized(name, rows=1))) for name in "bcd"]
    results = await asyncio.gather(first, *rest)
    assert results == ["done:a", "done:b", "done:c", "done:d"]
    assert recorder.batches == [["a"], ["b", "c", "d"]]


async def test_batches_stay_within_max_rows_and_keep_arrival_order() -> None:
    recorder = Recorder(delay=0.0)
    group: GroupCommit[str, str] = GroupCommit(recorder, max_rows=10)
    results = await asyncio.gather(
        *(group.submit(Sized(name, rows=rows)) for name, rows in [("a", 6), ("b", 4), ("c", 1)])
    )
    assert results == ["done:a", "done:b", "done:c"]
    assert recorder.batches == [["a", "b"], ["c"]]


async def test_two_requests_with_one_exclusive_key_never_share_a_batch() -> None:
    recorder = Recorder(delay=0.0)
    group: GroupCommit[str, str] = GroupCommit(recorder, max_rows=100)
    await asyncio.gather(
        group.submit(Sized("a", rows=1, exclusive_key="k")),
        group.submit(Sized("b", rows=1)),
        group.submit(Sized("c", rows=1, exclusive_key="k")),
        group.submit(Sized("d", rows=1)),
    )
    assert recorder.batches == [["a", "b"], ["c", "d"]]


async def test_a_refused_request_fails_alone() -> None:
    recorder = Recorder(delay=0.0, poison="bad")
    group: GroupCommit[str, str] = GroupCommit(recorder, max_rows=100)
    results = await asyncio.gather(
        *(group.submit(Sized(name, rows=1)) for name in ["a", "bad", "c"]),
        return_exceptions=True,
    )
    assert results[0] == "done:a" and results[2] == "done:c"
    assert isinstance(results[1], ValueError)
    assert recorder.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


async def test_an_outage_fails_the_whole_batch_without_retrying_each() -> None:
    async def down(requests: Sequence[str]) -> list[str]:
        calls.append(list(requests))
        raise Unavailable("database unavailable")

    calls: list[list[str]] = []
    group: GroupCommit[str, str] = GroupCommit(down, max_rows=100)
    results = await asyncio.gather(
        *(group.submit(Sized(name, rows=1)) for name in "abc"), return_exceptions=True
    )
    assert all(isinstance(result, Unavailable) for result in results)
    assert calls == [["a", "b", "c"]]


async def test_a_caller_that_goes_away_does_not_take_its_request_back() -> None:
    recorder = Recorder(delay=0.1)
    group: GroupCommit[str, str] = GroupCommit(recorder, max_rows=100)
    waiting = asyncio.create_task(group.submit(Sized("a", rows=1)))
    await asyncio.sleep(0.02)
    waiting.cancel()
    after = await group.submit(Sized("b", rows=1))  # the runner outlived the caller
    assert after == "done:b"
    assert recorder.batches == [["a"], ["b"]]


# -- the notification service on PostgreSQL ------------------------------------------------------


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(postgres_url, pool_size=5)
    yield engine
    await engine.dispose()


async def test_gathered_creates_each_get_their_own_notifications(
    engine: AsyncEngine, postgres_url: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    sessions = make_session_factory(engine)
    service = NotificationService(sessions=sessions, bus=LocalBus(), limits=NotificationLimits())
    preferences = PreferenceService(sessions=sessions, bus=LocalBus(), unsubscribe_key=None)
    # "quiet" does not want "deals" in the app: suppressed in those requests only.
    await preferences.update(
        tenant_id=tenant, user_id="quiet", patch={"categories": {"deals": {"in_app": False}}}
    )
    users = ["a", "b", "quiet"]

    async def create(index: int) -> tuple[int, list[str], list[str]]:
        category = "deals" if index % 2 else "tasks"
        result = await service.create(
            tenant_id=tenant,
            user_ids=users,
            notification=NewNotification(title=f"n{index}", body="", category=category),
        )
        return index, result.ids, result.suppressed

    results = await asyncio.gather(*(create(i) for i in range(30)))
    assert service._creates.batches < 30, "concurrent creates were not gathered"

    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        for index, ids, suppressed in results:
            rows = await connection.fetch(
                "SELECT user_id, title FROM notifications WHERE tenant_id = $1"
                " AND id = ANY($2::bigint[]) ORDER BY user_id",
                tenant,
                [int(i) for i in ids],
            )
            expected = ["a", "b"] if index % 2 else users
            assert [(row["user_id"], row["title"]) for row in rows] == [
                (user, f"n{index}") for user in expected
            ]
            assert suppressed == (["quiet"] if index % 2 else [])
        for user, count in (("a", 30), ("b", 30), ("quiet", 15)):
            seqs = [
                row["seq"]
                for row in await connection.fetch(
                    "SELECT seq FROM notifications WHERE tenant_id = $1 AND user_id = $2"
                    " ORDER BY seq",
                    tenant,
                    user,
                )
            ]
            assert seqs == list(range(1, count + 1)), f"{user}: holes or duplicates"
    finally:
        await connection.close()


async def test_concurrent_creates_with_one_idempotency_key_store_once(
    engine: AsyncEngine, postgres_url: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    service = NotificationService(
        sessions=make_session_factory(engine), bus=LocalBus(), limits=NotificationLimits()
    )
    results = await asyncio.gather(
        *(
            service.create(
                tenant_id=tenant,
                user_ids=["a", "b"],
                notification=NewNotification(title="once", body=""),
                idempotency_key="same-key",
            )
            for _ in range(5)
        )
    )
    assert sum(result.created for result in results) == 1
    assert len({tuple(result.ids) for result in results}) == 1
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM notifications WHERE tenant_id = $1", tenant
        )
    finally:
        await connection.close()
    assert stored == 2


async def test_after_the_seq_allocation_a_create_only_inserts_and_commits(
    engine: AsyncEngine,
) -> None:
    """Every other create for these users waits on their counter rows from the allocation
    to the commit: the reads (preferences, push devices, webhook subscribers) come before it."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    sessions = make_session_factory(engine)

    class NoQueue:
        async def kick(self, delivery_ids: Sequence[int]) -> None:
            pass

    pushes = PushService(queue=NoQueue(), sessions=sessions, sweep_after_seconds=60)
    service = NotificationService(
        sessions=sessions, bus=LocalBus(), limits=NotificationLimits(), pushes=pushes
    )
    await DeviceService(sessions=sessions).register(
        tenant_id=tenant, user_id="a", kind="fcm", token="device-token-a"
    )
    webhooks = WebhookService(sessions=sessions, check_url=check_shape_only, max_per_tenant=5)
    await webhooks.create(
        tenant_id=tenant, url="https://hooks.example/x", events=["notification.created"]
    )
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await service.create(
            tenant_id=tenant, user_ids=["a", "b"], notification=NewNotification(title="t", body="")
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    allocation = next(i for i, s in enumerate(statements) if "NOTIFICATION_COUNTERS" in s)
    before, after = statements[:allocation], statements[allocation + 1 :]
    assert any("PUSH_DEVICES" in s for s in before) and any(
        "WEBHOOK_ENDPOINTS" in s for s in before
    )
    assert [s.split()[2] for s in after] == ["PUSH_DELIVERIES", "WEBHOOK_DELIVERIES"], after
