"""RabbitMQ intake: duplicates, poison messages, restarts, database and broker outages.

Real RabbitMQ, real PostgreSQL and Redis, a real Socket.IO client; each test has queues of
its own (deleted afterwards). Outages are real too: the database or the broker is reached
through a loopback proxy (tests/harness/proxy.py) that the test stops and starts.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from hub.errors import Unavailable
from hub.intake.apply import EventApplier
from hub.intake.rabbitmq import RabbitIntake
from hub.intake.runtime import classify_failure
from hub.keys import DB_SESSIONS, EMAILS, NOTIFICATIONS
from hub.realtime import NOTIFICATIONS_NAMESPACE
from hub.services.notifications import NotificationService
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.ports import eventually, free_port
from tests.harness.proxy import TcpProxy
from tests.harness.services import _asyncpg_dsn
from tests.harness.tokens import hs256_token

DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
START_RABBITMQ = "rabbitmq-server -detached"


# --- helpers -------------------------------------------------------------------------------


def event(
    tenant: str, number: int, *, recipients: Sequence[str] = ("alice", "bob"), **changes: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"evt-{number}",
        "tenant_id": tenant,
        "type": "deal.updated",
        "recipients": [{"user_id": user} for user in recipients],
        "notification": {"title": f"Event {number}", "body": "b", "data": {"n": number}},
    }
    body.update(changes)
    return body


def encode(document: Any) -> bytes:
    return orjson.dumps(document)


@dataclass
class Database:
    """Counts straight from the test database (asyncpg), independent of the hub's code."""

    postgres_url: str

    async def value(self, sql: str, *args: Any) -> Any:
        connection = await asyncpg.connect(_asyncpg_dsn(self.postgres_url), timeout=5)
        try:
            return await connection.fetchval(sql, *args)
        finally:
            await connection.close()

    async def notifications(self, tenant: str) -> int:
        count: int = await self.value(
            "SELECT count(*) FROM notifications WHERE tenant_id = $1", tenant
        )
        return count

    async def processed(self, tenant: str) -> int:
        count: int = await self.value(
            "SELECT count(*) FROM processed_events WHERE tenant_id = $1", tenant
        )
        return count

    async def distinct_per_user(self, tenant: str) -> int:
        """Distinct (user, event number) pairs: equals the row count iff nothing doubled."""
        count: int = await self.value(
            "SELECT count(DISTINCT (user_id, data->>'n')) FROM notifications WHERE tenant_id = $1",
            tenant,
        )
        return count


@dataclass
class Rabbit:
    """This test's queue, dead-letter exchange and DLQ, and a publisher connection."""

    url: str
    queue: str
    connection: AbstractRobustConnection

    @property
    def dlx(self) -> str:
        return f"{self.queue}.dlx"

    @property
    def dlq(self) -> str:
        return f"{self.queue}.dlq"

    async def declare(self) -> None:
        """The producer's side of the topology: identical to what the intake declares, so
        messages published before the intake starts are kept."""
        async with self.connection.channel() as channel:
            dlx = await channel.declare_exchange(
                self.dlx, aio_pika.ExchangeType.FANOUT, durable=True
            )
            dlq = await channel.declare_queue(self.dlq, durable=True)
            await dlq.bind(dlx)
            await channel.declare_queue(
                self.queue, durable=True, arguments={"x-dead-letter-exchange": self.dlx}
            )

    async def publish(
        self, bodies: Sequence[bytes], *, headers: dict[str, Any] | None = None
    ) -> None:
        """Persistent messages to the queue, each confirmed by the broker."""
        async with self.connection.channel(publisher_confirms=True) as channel:
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            body,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            content_type="application/json",
                            headers=headers,
                        ),
                        routing_key=self.queue,
                    )
                    for body in bodies
                )
            )

    async def ready(self, queue: str | None = None) -> int:
        """Messages waiting in a queue (not counting ones delivered and not yet acked)."""
        async with self.connection.channel() as channel:
            declared = await channel.declare_queue(queue or self.queue, passive=True)
            count = declared.declaration_result.message_count
            assert count is not None
            return count

    async def take_dead_letters(self) -> list[AbstractIncomingMessage]:
        """Everything in the DLQ, removed from it."""
        taken: list[AbstractIncomingMessage] = []
        async with self.connection.channel() as channel:
            dlq = await channel.declare_queue(self.dlq, passive=True)
            while (message := await dlq.get(no_ack=True, fail=False, timeout=5)) is not None:
                taken.append(message)
        return taken


@pytest.fixture(scope="session")
async def rabbitmq_url() -> str:
    url = os.environ.get("NOTIFYHUB_TEST_RABBITMQ_URL", DEFAULT_RABBITMQ_URL)
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except Exception as exc:
        pytest.fail(
            f"RabbitMQ does not answer at {url} ({exc}).\nStart it with: {START_RABBITMQ}\n"
            "or point NOTIFYHUB_TEST_RABBITMQ_URL at a broker.",
            pytrace=False,
        )
    await connection.close()
    return url


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[Rabbit]:
    connection = await aio_pika.connect_robust(rabbitmq_url, timeout=5)
    queues = Rabbit(
        url=rabbitmq_url,
        queue=f"notifyhub-test-{uuid.uuid4().hex[:8]}",
        connection=connection,
    )
    await queues.declare()
    yield queues
    async with connection.channel() as channel:
        for name in (queues.queue, queues.dlq):
            await channel.queue_delete(name)
        await channel.exchange_delete(queues.dlx)
    await connection.close()


@dataclass
class RunningIntake:
    intake: RabbitIntake
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def stopped(self, timeout: float = 15.0) -> None:
        """Set stop and wait (bounded) for the intake to finish and close."""
        self.stop.set()
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


StartIntake = Callable[..., Awaitable[RunningIntake]]


@pytest.fixture
async def start_intake(hub: RunningHub, rabbit: Rabbit) -> AsyncIterator[StartIntake]:
    """Run RabbitIntakes on the resources of the in-process hub; all stopped afterwards."""
    running: list[RunningIntake] = []

    async def start(**overrides: Any) -> RunningIntake:
        # ``sessions`` may be overridden: the intake then reaches the database that way.
        sessions = overrides.pop("sessions", hub.app[DB_SESSIONS])
        notifications = hub.app[NOTIFICATIONS]
        options: dict[str, Any] = {
            "url": rabbit.url,
            "queue": rabbit.queue,
            "dead_letter_exchange": rabbit.dlx,
            "apply": EventApplier(
                notifications=NotificationService(
                    sessions=sessions, bus=notifications.bus, limits=notifications.limits
                ),
                emails=hub.app[EMAILS],
                source="rabbitmq",
            ),
            "limits": notifications.limits,
        }
        options.update(overrides)
        intake = RabbitIntake(**options)
        stop = asyncio.Event()
        handle = RunningIntake(intake, stop, asyncio.create_task(intake.run(stop)))
        running.append(handle)
        return handle

    yield start
    for handle in running:
        handle.stop.set()
    for handle in running:
        try:
            await asyncio.wait_for(handle.task, 15)
        except TimeoutError:
            handle.task.cancel()
            await asyncio.gather(handle.task, return_exceptions=True)


@pytest.fixture
def database(postgres_url: str) -> Database:
    return Database(postgres_url)


# --- scenarios -----------------------------------------------------------------------------


async def test_duplicates_apply_once_across_rabbitmq_and_rest(
    hub: RunningHub,
    tenant: str,
    rabbit: Rabbit,
    start_intake: StartIntake,
    database: Database,
    sio_connect: SioConnect,
) -> None:
    alice = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    bodies = [encode(event(tenant, n)) for n in range(200)] * 2
    # Copies land in the same batch as well as in different ones.
    random.Random(7).shuffle(bodies)
    await rabbit.publish(bodies[:250])
    running = await start_intake()
    service = ApiClient.for_service(hub.url, tenant)
    # Some events also arrive over REST while the intake applies the same ones.
    rest_numbers = list(range(0, 200, 5))
    publishing = rabbit.publish(bodies[250:])
    posting = asyncio.gather(
        *(service.post("/api/events/", event(tenant, n)) for n in rest_numbers)
    )
    _, answers = await asyncio.gather(publishing, posting)
    assert all(status == 202 for status, _ in answers), answers

    async def all_consumed() -> bool:
        stats = running.intake.stats
        return stats.applied + stats.duplicates == 400 and await rabbit.ready() == 0

    await eventually(all_consumed, timeout=20)
    assert await database.processed(tenant) == 200
    assert await database.notifications(tenant) == 400
    assert await database.distinct_per_user(tenant) == 400
    # Exactly one source applied each event: the intake or REST ("duplicate": false).
    applied_over_rest = sum(1 for _, body in answers if not body["duplicate"])
    assert running.intake.stats.applied + applied_over_rest == 200

    received = await alice.wait_for("notification:new", count=200, timeout=20)
    await asyncio.sleep(0.5)  # room for a duplicate emit to show up
    received = alice.received("notification:new")
    assert len(received) == 200
    assert sorted(item["data"]["n"] for item in received) == list(range(200))
    assert sorted(item["seq"] for item in received) == list(range(1, 201))
    for user in ("alice", "bob"):
        status, body = await ApiClient.for_user(hub.url, tenant, user).get(
            "/api/notifications/unread-count/"
        )
        assert (status, body) == (200, {"unread_count": 200, "unseen_count": 200})
    assert await rabbit.take_dead_letters() == []
    assert running.intake.status == "running"
    await running.stopped()
    assert running.intake.status == "stopped"


async def test_poison_messages_go_to_the_dlq_once_with_their_reason(
    tenant: str, rabbit: Rabbit, start_intake: StartIntake, database: Database
) -> None:
    oversized = encode(event(tenant, 9999, notification={"title": "big", "body": "x" * 300_000}))
    poison: dict[bytes, str] = {
        b"this is not json {": "not JSON",
        b"": "not JSON",
        b"[1, 2, 3]": "event must be a JSON object",
        encode({"event_id": "missing-fields", "tenant_id": tenant}): "invalid event: ",
        encode(event(tenant, 9998, recipients=[])): "invalid event: recipients",
        oversized: f"event larger than {256 * 1024} bytes",
        # PostgreSQL stores no NUL character: the envelope check refuses it up front.
        encode(
            event(tenant, 9997, notification={"title": "nul \u0000 inside", "body": "b"})
        ): "invalid notification: text must not contain NUL",
    }
    good = [encode(event(tenant, n)) for n in range(60)]
    mixed: list[bytes] = []
    poison_bodies = list(poison)
    for index, body in enumerate(good):
        mixed.append(body)
        if index % 8 == 3 and poison_bodies:
            mixed.append(poison_bodies.pop())
    mixed.extend(poison_bodies)
    await rabbit.publish(mixed[:30], headers={"x-producer": "crm-deals"})
    running = await start_intake(batch_max=25)
    await rabbit.publish(mixed[30:], headers={"x-producer": "crm-deals"})

    async def done() -> bool:
        return await database.processed(tenant) == 60 and await rabbit.ready(rabbit.dlq) == len(
            poison
        )

    await eventually(done, timeout=20)
    await asyncio.sleep(0.5)  # a second copy of a dead letter would show up by now
    letters = await rabbit.take_dead_letters()
    assert sorted(letter.body for letter in letters) == sorted(poison)
    for letter in letters:
        headers = letter.headers or {}
        error = headers["error"]
        assert isinstance(error, str)
        assert error.startswith(poison[letter.body]), (letter.body[:60], error)
        assert headers["source-queue"] == rabbit.queue
        assert headers["x-producer"] == "crm-deals"  # the producer's headers are kept
        assert letter.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert await database.notifications(tenant) == 120
    assert running.intake.stats.dead_lettered == len(poison)

    # Still consuming after all that.
    assert running.intake.status == "running"
    assert not running.task.done()
    await rabbit.publish([encode(event(tenant, 500))])
    await eventually(lambda: _equals(database.processed(tenant), 61), timeout=20)
    await running.stopped()
    assert await rabbit.ready() == 0
    assert await rabbit.ready(rabbit.dlq) == 0


async def test_stop_mid_stream_then_restart_loses_and_doubles_nothing(
    tenant: str, rabbit: Rabbit, start_intake: StartIntake, database: Database
) -> None:
    total = 1500
    await rabbit.publish([encode(event(tenant, n)) for n in range(total)])
    first = await start_intake(batch_max=20, prefetch=60)
    await eventually(lambda: _at_least(database.processed(tenant), 100), timeout=20)
    await first.stopped()
    assert first.intake.status == "stopped"
    applied = await database.processed(tenant)
    left = await rabbit.ready()
    assert 0 < applied < total, "stopped after the end: raise total"
    # Every message is either applied *and* acked, or still in the queue: the batch in hand
    # at stop was finished, and what was prefetched but not in a batch went back.
    assert applied + left == total
    assert first.intake.stats.applied == applied

    second = await start_intake()
    await eventually(lambda: _equals(database.processed(tenant), total), timeout=20)
    await eventually(lambda: _equals(rabbit.ready(), 0), timeout=20)
    assert await database.notifications(tenant) == 2 * total
    assert await database.distinct_per_user(tenant) == 2 * total
    # Nothing applied by the first intake came back to the second one.
    assert second.intake.stats.applied == total - applied
    assert second.intake.stats.duplicates == 0
    await second.stopped()


async def test_database_outage_pauses_requeues_and_resumes(
    hub: RunningHub,
    tenant: str,
    rabbit: Rabbit,
    start_intake: StartIntake,
    database: Database,
    postgres_url: str,
) -> None:
    # The intake reaches PostgreSQL through a proxy that is closed for now: connections are
    # refused exactly as with a database that is down.
    url = make_url(postgres_url)
    proxy = TcpProxy("127.0.0.1", url.port or 5432)
    engine = create_async_engine(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        pool_pre_ping=True,
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        good = [encode(event(tenant, n)) for n in range(50)]
        await rabbit.publish([*good[:25], b"not json", *good[25:]])
        fast_retry = {"sessions": sessions, "retry_initial_seconds": 0.05, "retry_max_seconds": 0.2}
        first = await start_intake(**fast_retry)
        await eventually(lambda: first.intake.stats.requeued >= 100, timeout=20)
        assert first.intake.status.startswith("paused: ConnectionRefusedError"), first.intake.status
        assert await database.processed(tenant) == 0
        # The poison one needs no database: dead-lettered at once, the good ones never.
        assert await rabbit.ready(rabbit.dlq) == 1
        # Stopping while paused acks nothing: every good event is back in the queue.
        await first.stopped()
        assert await rabbit.ready() == 50

        second = await start_intake(**fast_retry)
        await eventually(lambda: second.intake.status.startswith("paused:"), timeout=20)
        await proxy.start()  # the database is back; the same intake resumes by itself
        await eventually(lambda: _equals(database.processed(tenant), 50), timeout=20)
        await eventually(lambda: second.intake.status == "running", timeout=20)
        await eventually(lambda: _equals(rabbit.ready(), 0), timeout=20)
        assert await database.notifications(tenant) == 100
        assert await database.distinct_per_user(tenant) == 100
        letters = await rabbit.take_dead_letters()
        assert [letter.body for letter in letters] == [b"not json"]
        await second.stopped()
    finally:
        await proxy.stop()
        await engine.dispose()


async def test_broker_away_at_start_and_a_dropped_connection(
    tenant: str, rabbit: Rabbit, start_intake: StartIntake, database: Database
) -> None:
    proxy = TcpProxy("127.0.0.1", urlsplit(rabbit.url).port or 5672)
    # aio-pika's reconnect interval (5 s by default) comes from the URL.
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/?reconnect_interval=0.2"
    try:
        running = await start_intake(url=url, retry_initial_seconds=0.05, retry_max_seconds=0.2)
        await asyncio.sleep(0.5)
        assert running.intake.status == "connecting"
        assert running.intake.last_error is not None
        await proxy.start()
        await eventually(lambda: running.intake.status == "running", timeout=20)

        total = 600
        await rabbit.publish([encode(event(tenant, n)) for n in range(total)])
        await eventually(lambda: _at_least(database.processed(tenant), 50), timeout=20)
        await proxy.stop()  # cut mid-stream: unacked deliveries go back to the queue
        await eventually(lambda: running.intake.status == "connecting", timeout=20)
        await proxy.start()
        await eventually(lambda: _equals(database.processed(tenant), total), timeout=20)
        await eventually(lambda: _equals(rabbit.ready(), 0), timeout=20)
        assert await database.notifications(tenant) == 2 * total
        assert await database.distinct_per_user(tenant) == 2 * total
        assert running.intake.stats.applied == total
        assert await rabbit.ready(rabbit.dlq) == 0
        await running.stopped()
    finally:
        await proxy.stop()


async def test_stop_while_the_broker_is_unreachable(
    rabbit: Rabbit, start_intake: StartIntake
) -> None:
    running = await start_intake(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    await asyncio.sleep(0.3)
    assert running.intake.status == "connecting"
    await running.stopped(timeout=5)
    assert running.intake.status == "stopped"


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (ConnectionRefusedError(111, "refused"), "outage"),
        (TimeoutError(), "outage"),
        (Unavailable("redis away"), "outage"),
        (RuntimeError("a bug"), "unknown"),
    ],
)
def test_failure_classification(error: BaseException, verdict: str) -> None:
    assert classify_failure(error) == verdict


def test_failure_classification_looks_inside_wrapped_errors() -> None:
    try:
        try:
            raise ConnectionResetError("peer went away")
        except ConnectionResetError as inner:
            raise RuntimeError("while committing") from inner
    except RuntimeError as outer:
        assert classify_failure(outer) == "outage"


# --- small async predicates ----------------------------------------------------------------


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _at_least(value: Awaitable[int], minimum: int) -> bool:
    return await value >= minimum
