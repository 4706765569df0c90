"""Kafka intake: duplicates, crashes, poison messages, consumer groups, outages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson
import pytest

from hub.intake.apply import EventApplier
from hub.intake.kafka import KafkaIntake
from hub.keys import EMAILS, NOTIFICATIONS
from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory, SioConnect, settings_environment
from tests.harness.kafka import KafkaTopics
from tests.harness.ports import eventually
from tests.harness.proxy import ProxyFactory
from tests.harness.services import _asyncpg_dsn
from tests.harness.tokens import hs256_token


def event(tenant: str, number: int, *, recipients: Sequence[str] = ("watcher",)) -> dict[str, Any]:
    return {
        "event_id": f"evt-{number}",
        "tenant_id": tenant,
        "type": "deal.updated",
        "recipients": [{"user_id": user} for user in recipients],
        "notification": {"title": f"Event {number}", "body": "b", "data": {"n": number}},
    }


async def query(postgres_url: str, sql: str, *args: Any) -> Any:
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def stored(postgres_url: str, tenant: str) -> int:
    count: int = await query(
        postgres_url, "SELECT count(*) FROM notifications WHERE tenant_id = $1", tenant
    )
    return count


async def assert_gapless(postgres_url: str, tenant: str, user: str, expected: int) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        seqs = [
            r["seq"]
            for r in await connection.fetch(
                "SELECT seq FROM notifications WHERE tenant_id = $1 AND user_id = $2 ORDER BY seq",
                tenant,
                user,
            )
        ]
    finally:
        await connection.close()
    assert seqs == list(range(1, expected + 1))


async def test_each_event_applies_once_however_often_it_arrives(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    kafka: KafkaTopics,
    sio_connect: SioConnect,
    postgres_url: str,
    tenant: str,
) -> None:
    hub: RunningHub = await hub_factory(kafka.settings(hub_settings))
    watcher = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="watcher")
    )
    events = [event(tenant, n, recipients=("watcher", f"user-{n % 7}")) for n in range(1000)]
    service = ApiClient.for_service(hub.url, tenant)
    # Some arrive over REST first, then everything twice over Kafka.
    for item in events[:50]:
        assert (await service.post("/api/events/", item))[0] == 202
    await kafka.produce_events(events + events[::-1])
    for item in events[950:]:
        assert (await service.post("/api/events/", item))[0] == 202

    async def all_stored() -> bool:
        return await stored(postgres_url, tenant) == 2000

    await eventually(all_stored, timeout=60, interval=0.2)
    received = await watcher.wait_for("notification:new", 1000, timeout=30)
    await asyncio.sleep(0.5)
    assert len(watcher.received("notification:new")) == 1000, "an event was emitted twice"
    assert [n["seq"] for n in received] == list(range(1, 1001))
    assert await stored(postgres_url, tenant) == 2000
    await assert_gapless(postgres_url, tenant, "watcher", 1000)
    assert (
        await query(
            postgres_url, "SELECT count(*) FROM processed_events WHERE tenant_id = $1", tenant
        )
        == 1000
    )


async def test_poison_messages_go_to_the_dlq_and_consumption_goes_on(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    kafka: KafkaTopics,
    postgres_url: str,
    tenant: str,
) -> None:
    await hub_factory(kafka.settings(hub_settings))
    good = [orjson.dumps(event(tenant, n)) for n in range(20)]
    poison = [
        b"not json at all",
        b"[1, 2, 3]",
        orjson.dumps({"event_id": "x", "tenant_id": tenant}),
        orjson.dumps({**event(tenant, 999), "recipients": []}),
        b"{" + b'"a": "' + b"x" * (300 * 1024) + b'"}',
    ]
    values = good[:10] + poison + good[10:]
    await kafka.produce(values)

    async def all_good_applied() -> bool:
        return await stored(postgres_url, tenant) == 20

    await eventually(all_good_applied, timeout=30, interval=0.2)
    dead = await kafka.read_dlq(len(poison))
    assert len(dead) == len(poison)
    assert sorted(r.value for r in dead) == sorted(poison)
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["error"]
        assert headers["source-topic"] == kafka.topic
        assert int(headers["source-partition"]) >= 0 and int(headers["source-offset"]) >= 0
    reasons = " | ".join(dict(r.headers)["error"].decode() for r in dead)
    assert "not JSON" in reasons and "must be a JSON object" in reasons
    assert "larger than" in reasons and "recipients" in reasons


REFUSED_TITLE = "the database refuses this title"


async def refuse_a_title_in_the_database(postgres_url: str) -> None:
    """A CHECK constraint the envelope rules know nothing of: an event that decodes, passes
    every check and is still refused by the database for its content (SQLSTATE 23514)."""
    await query(
        postgres_url,
        "DO $$ BEGIN ALTER TABLE notifications ADD CONSTRAINT test_refused_title "
        f"CHECK (title <> '{REFUSED_TITLE}'); EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    )


@pytest.fixture
async def consuming_hub(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, kafka: KafkaTopics
) -> RunningHub:
    """A hub consuming this test's topic."""
    hub: RunningHub = await hub_factory(kafka.settings(hub_settings))
    return hub


async def test_an_event_the_database_refuses_is_dead_lettered_alone(
    consuming_hub: RunningHub, kafka: KafkaTopics, postgres_url: str, tenant: str
) -> None:
    await refuse_a_title_in_the_database(postgres_url)
    refused = orjson.dumps(
        {**event(tenant, 500), "notification": {"title": REFUSED_TITLE, "body": "b"}}
    )
    good = [orjson.dumps(event(tenant, n)) for n in range(20)]
    await kafka.produce([*good[:10], refused, *good[10:]])

    async def all_good_applied() -> bool:
        return await stored(postgres_url, tenant) == 20

    await eventually(all_good_applied, timeout=30, interval=0.2)
    dead = await kafka.read_dlq(1)
    assert [record.value for record in dead] == [refused]
    error = dict(dead[0].headers)["error"].decode()
    assert error.startswith("database refused the event: IntegrityError"), error
    # The partition goes on: a later event is applied too.
    await kafka.produce([orjson.dumps(event(tenant, 21))])
    await eventually(lambda: _count_is(postgres_url, tenant, 21), timeout=20, interval=0.2)
    await assert_gapless(postgres_url, tenant, "watcher", 21)


async def _count_is(postgres_url: str, tenant: str, expected: int) -> bool:
    return await stored(postgres_url, tenant) == expected


async def test_killed_consumer_loses_nothing_and_applies_nothing_twice(
    hub_settings: SettingsFactory, kafka: KafkaTopics, postgres_url: str, tenant: str
) -> None:
    settings = kafka.settings(hub_settings, kafka_max_batch=50)
    env = {**os.environ, **settings_environment(settings)}
    total = 3000
    await kafka.produce_events(
        [event(tenant, n, recipients=("watcher", f"user-{n % 3}")) for n in range(total)]
    )

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "hub", "consume"], env=env)

    for round_ in range(3):
        consumer = start()
        before = await stored(postgres_url, tenant)

        async def progressed(before: int = before) -> bool:
            return await stored(postgres_url, tenant) > before + 100

        await eventually(progressed, timeout=30, interval=0.05)
        consumer.send_signal(signal.SIGKILL)
        await asyncio.to_thread(consumer.wait)
        assert consumer.returncode == -signal.SIGKILL, round_
    final = start()
    try:

        async def everything() -> bool:
            return await stored(postgres_url, tenant) >= 2 * total

        await eventually(everything, timeout=90, interval=0.2)
        await asyncio.sleep(1.0)
        assert await stored(postgres_url, tenant) == 2 * total
        await assert_gapless(postgres_url, tenant, "watcher", total)
    finally:
        final.send_signal(signal.SIGTERM)
        await asyncio.to_thread(final.wait, 20)
    assert final.returncode == 0


async def test_two_consumers_split_partitions_and_the_survivor_takes_over(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    kafka: KafkaTopics,
    postgres_url: str,
    tenant: str,
) -> None:
    hub: RunningHub = await hub_factory(hub_settings())
    settings = kafka.settings(hub_settings)

    apply = EventApplier(
        notifications=hub.app[NOTIFICATIONS], emails=hub.app[EMAILS], source="kafka"
    )

    consumers = [
        KafkaIntake(settings, apply=apply, limits=hub.app[NOTIFICATIONS].limits) for _ in range(2)
    ]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(c.run(s)) for c, s in zip(consumers, stops, strict=True)]
    try:
        await eventually(
            lambda: (
                all(c.stats.assigned for c in consumers)
                and sum(len(c.stats.assigned) for c in consumers) == 4
            ),
            timeout=30,
        )
        assert not consumers[0].stats.assigned & consumers[1].stats.assigned
        await kafka.produce_events([event(tenant, n) for n in range(400)])

        async def first_half() -> bool:
            return await stored(postgres_url, tenant) == 400

        await eventually(first_half, timeout=30, interval=0.2)
        assert consumers[0].stats.applied > 0 and consumers[1].stats.applied > 0
        stops[0].set()
        await asyncio.wait_for(tasks[0], 15)
        await eventually(lambda: len(consumers[1].stats.assigned) == 4, timeout=30)
        await kafka.produce_events([event(tenant, n) for n in range(400, 800)])

        async def everything() -> bool:
            return await stored(postgres_url, tenant) == 800

        await eventually(everything, timeout=30, interval=0.2)
        assert consumers[0].stats.applied + consumers[1].stats.applied == 800
        await assert_gapless(postgres_url, tenant, "watcher", 800)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_database_outage_pauses_without_commits_or_dead_letters(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    kafka: KafkaTopics,
    tcp_proxy: ProxyFactory,
    postgres_url: str,
    tenant: str,
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    proxy = await tcp_proxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    hub: RunningHub = await hub_factory(
        kafka.settings(hub_settings, database_url=through_proxy, kafka_max_batch=20)
    )
    await kafka.produce_events([event(tenant, n) for n in range(50)])

    async def first_ones() -> bool:
        return await stored(postgres_url, tenant) == 50

    await eventually(first_ones, timeout=30, interval=0.2)
    await proxy.stop()  # the database is gone for the hub
    await kafka.produce_events([event(tenant, n) for n in range(50, 150)])
    from hub.keys import KAFKA_INTAKE

    intake = hub.app[KAFKA_INTAKE]
    await eventually(lambda: intake.stats.state == "paused", timeout=30)
    await asyncio.sleep(1.5)
    assert await stored(postgres_url, tenant) == 50
    assert intake.stats.dead_lettered == 0
    await proxy.start()  # back

    async def everything() -> bool:
        return await stored(postgres_url, tenant) == 150

    await eventually(everything, timeout=60, interval=0.2)
    await eventually(lambda: intake.stats.state == "running", timeout=10)
    assert intake.stats.dead_lettered == 0
    await assert_gapless(postgres_url, tenant, "watcher", 150)


async def test_unreachable_broker_is_retried_and_reported_while_http_serves(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory
) -> None:
    from tests.harness.ports import free_port

    hub: RunningHub = await hub_factory(
        hub_settings(
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", kafka_topic=f"t-{uuid.uuid4().hex}"
        )
    )
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{hub.url}/healthz") as response:
            assert response.status == 200

        async def reports_kafka() -> bool:
            async with http.get(f"{hub.url}/readyz") as response:
                body = await response.json()
                return response.status == 503 and body["failing"] == ["kafka"]

        await eventually(reports_kafka, timeout=15, interval=0.2)


async def test_readyz_reports_a_healthy_consumer(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, kafka: KafkaTopics
) -> None:
    hub: RunningHub = await hub_factory(kafka.settings(hub_settings))
    import aiohttp

    async def ready() -> bool:
        async with aiohttp.ClientSession() as http, http.get(f"{hub.url}/readyz") as response:
            body = await response.json()
            return response.status == 200 and body["checks"].get("kafka") == "ok"

    await eventually(ready, timeout=15, interval=0.2)
