"""hub.producer and ``notifyhub publish``: CRM modules send envelopes the hub applies."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from hub.producer import (
    InvalidEvent,
    event_key,
    make_event,
    publish_event,
    publish_events,
    validate_event,
)
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory
from tests.harness.kafka import KafkaTopics
from tests.harness.ports import eventually
from tests.harness.processes import NOTIFYHUB, clean_environment


def sample(tenant: str = "acme", number: int = 1, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "tenant_id": tenant,
        "type": "deal.won",
        "recipients": ["alice", {"user_id": "bob", "email": "bob@acme.example"}],
        "notification": {"title": f"Deal {number} won", "body": "b", "data": {"n": number}},
        "event_id": f"deal-{number}",
    }
    values.update(overrides)
    return make_event(**values)


async def read_topic(
    kafka: KafkaTopics, topic: str, expected: int, *, timeout: float = 10.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` (no group), waiting until ``expected`` have arrived.

    With ``expected == 0`` it reads for the whole ``timeout`` (to show nothing came).
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        rounds = max(1, int(timeout / 0.25))
        for _ in range(rounds):
            batch = await consumer.getmany(timeout_ms=250)
            records += [r for rs in batch.values() for r in rs]
            if expected and len(records) >= expected:
                break
    finally:
        await consumer.stop()
    return records


# -- make_event ---------------------------------------------------------------------------


def test_make_event_builds_the_contract_envelope() -> None:
    event = make_event(
        tenant_id="acme",
        type="deal.won",
        recipients=["alice", {"user_id": "bob", "email": "bob@acme.example"}],
        notification={"title": "Won", "body": "b", "category": "deals", "link": None},
        email={"template_key": "deal_won", "context": {"Deal Name": "X"}},
    )
    assert set(event) == {
        "event_id",
        "tenant_id",
        "type",
        "occurred_at",
        "recipients",
        "notification",
        "email",
    }
    assert uuid.UUID(hex=event["event_id"]).version == 4 and len(event["event_id"]) == 32
    occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
    assert occurred.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - occurred) < timedelta(seconds=10)
    assert event["recipients"] == [
        {"user_id": "alice"},
        {"user_id": "bob", "email": "bob@acme.example"},
    ]
    assert event["notification"] == {"title": "Won", "body": "b", "category": "deals"}
    envelope = validate_event(event)
    assert envelope.key == ("acme", event["event_id"])
    # Survives JSON, as it goes over Kafka.
    assert validate_event(orjson.loads(orjson.dumps(event))) == envelope


def test_make_event_keeps_given_id_and_converts_time_to_utc() -> None:
    moment = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = make_event(
        tenant_id="acme",
        type="t",
        recipients=["a"],
        notification={"title": "x"},
        event_id="deal-7",
        occurred_at=moment,
    )
    assert event["event_id"] == "deal-7"
    assert event["occurred_at"] == "2026-01-02T10:00:00Z"
    assert event_key(event) == b"acme:deal-7"


def test_make_event_schedules_and_digests() -> None:
    moment = datetime(2026, 1, 2, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = make_event(
        tenant_id="acme",
        type="t",
        recipients=["a"],
        notification={"title": "x"},
        send_at=moment,
        digest={"key": "deals", "window_seconds": 600},
    )
    assert event["send_at"] == "2026-01-02T10:00:00Z"
    assert event["digest"] == {"key": "deals", "window_seconds": 600}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"recipients": []}, "recipients: List should have at least 1 item"),
        ({"recipients": "alice"}, "recipients must be a list"),
        ({"recipients": [{"email": "a@b.c"}]}, "recipients.0.user_id: Field required"),
        ({"recipients": [{"user_id": "a", "mail": "a@b.c"}]}, "recipients.0: unknown field"),
        ({"recipients": [{"user_id": "a", "email": "nope"}]}, "recipients.0.email"),
        ({"recipients": [42]}, "recipients.0: expected a user id"),
        ({"tenant_id": ""}, "tenant_id: String should have at least 1 character"),
        ({"type": ""}, "type: String should have at least 1 character"),
        ({"event_id": "x" * 201}, "event_id: String should have at most 200"),
        ({"notification": {"body": "no title"}}, "notification.title: Field required"),
        ({"notification": {"title": "  "}}, "title must not be empty"),
        ({"notification": {"title": "x" * 201}}, "title is longer than 200"),
        (
            {"notification": {"title": "x", "catgory": "c"}},
            "notification: unknown field(s) catgory",
        ),
        ({"notification": {"title": "x", "data": {"o": object()}}}, "not JSON-serialisable"),
        ({"notification": {"title": "x", "data": {"big": "x" * 20_000}}}, "data encodes to more"),
        ({"email": {"subject": "s"}}, "email.template_key: Field required"),
        ({"email": {"template_key": "k", "ctx": {}}}, "email: unknown field(s) ctx"),
        ({"occurred_at": datetime(2026, 1, 1)}, "occurred_at must be timezone-aware"),
        ({"send_at": datetime(2026, 1, 1)}, "send_at must be timezone-aware"),
        ({"digest": {"key": "d", "window_seconds": 0}}, "digest.window_seconds"),
        ({"digest": {"key": "d", "window_seconds": 604801}}, "digest.window_seconds"),
        ({"digest": {"key": "d", "window": 60}}, "digest: unknown field(s) window"),
    ],
)
def test_make_event_refuses_what_the_hub_would_dead_letter(
    overrides: dict[str, Any], message: str
) -> None:
    values: dict[str, Any] = {
        "tenant_id": "acme",
        "type": "deal.won",
        "recipients": ["alice"],
        "notification": {"title": "Won"},
    }
    values.update(overrides)
    with pytest.raises(InvalidEvent) as caught:
        make_event(**values)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


def test_validate_event_refuses_oversized_and_non_mapping_events() -> None:
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        validate_event([1, 2])  # type: ignore[arg-type]
    huge = {**sample(), "padding": "x" * (300 * 1024)}
    with pytest.raises(InvalidEvent, match="more than the hub's 262144"):
        validate_event(huge)


# -- publishing ---------------------------------------------------------------------------


async def test_publish_event_sends_key_and_value_and_waits_for_the_ack(
    kafka: KafkaTopics,
) -> None:
    events = [sample(number=n) for n in range(3)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await publish_event(producer, event, topic=kafka.topic)
        await publish_event(producer, events[1], topic=kafka.topic)  # a duplicate
        with pytest.raises(InvalidEvent):
            await publish_event(producer, {**events[0], "recipients": []}, topic=kafka.topic)
    finally:
        await producer.stop()
    records = await read_topic(kafka, kafka.topic, 4)
    assert len(records) == 4
    by_key: dict[bytes, list[ConsumerRecord]] = {}
    for record in records:
        assert record.key is not None
        by_key.setdefault(record.key, []).append(record)
    assert set(by_key) == {f"acme:deal-{n}".encode() for n in range(3)}
    for event in events:
        copies = by_key[f"acme:{event['event_id']}".encode()]
        assert all(orjson.loads(r.value) == event for r in copies)
    duplicates = by_key[b"acme:deal-1"]
    assert len(duplicates) == 2
    assert duplicates[0].partition == duplicates[1].partition, "copies of one event split"


async def test_publish_events_sends_all_or_nothing(kafka: KafkaTopics) -> None:
    events = [sample(number=n) for n in range(25)]
    assert await publish_events(kafka.bootstrap, events, topic=kafka.topic) == 25
    records = await read_topic(kafka, kafka.topic, 25)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        e["event_id"] for e in events
    )
    assert all(r.key == event_key(orjson.loads(r.value)) for r in records)

    bad = [sample(number=100), {**sample(number=101), "tenant_id": ""}, sample(number=102)]
    with pytest.raises(InvalidEvent, match=r"event 2 \(event_id 'deal-101'\): .*tenant_id"):
        await publish_events(kafka.bootstrap, bad, topic=kafka.topic)
    assert await publish_events(kafka.bootstrap, [], topic=kafka.topic) == 0
    assert len(await read_topic(kafka, kafka.topic, 0, timeout=1.5)) == 25


# -- notifyhub publish ----------------------------------------------------------------------


def publish_cli(
    *args: str, kafka: KafkaTopics | None, stdin: bytes | None = None, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = clean_environment(**env)
    if kafka is not None:
        environment["NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap
    return subprocess.run(
        [NOTIFYHUB, "publish", *args],
        env=environment,
        cwd=cwd,
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_publishes_an_array_a_single_event_and_json_lines(
    kafka: KafkaTopics, tmp_path: Path
) -> None:
    array = tmp_path / "events.json"
    array.write_bytes(orjson.dumps([sample(number=n) for n in range(10)]))
    result = publish_cli(
        "--file", str(array), kafka=kafka, cwd=tmp_path, NOTIFYHUB_KAFKA_TOPIC=kafka.topic
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"published 10 events to {kafka.topic}"

    single = tmp_path / "one.json"
    single.write_bytes(orjson.dumps(sample(number=10), option=orjson.OPT_INDENT_2))
    result = publish_cli("--file", str(single), "--topic", kafka.topic, kafka=kafka, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"published 1 event to {kafka.topic}"

    lines = b"\n".join(orjson.dumps(sample(number=n)) for n in range(11, 16)) + b"\n\n"
    result = publish_cli(
        "--file", "-", "--topic", kafka.topic, kafka=kafka, cwd=tmp_path, stdin=lines
    )
    assert result.returncode == 0, result.stderr
    assert "published 5 events" in result.stdout

    records = await read_topic(kafka, kafka.topic, 16)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        f"deal-{n}" for n in range(16)
    )
    assert all(r.key == f"acme:{orjson.loads(r.value)['event_id']}".encode() for r in records)


async def test_cli_refuses_a_bad_file_and_publishes_nothing(
    kafka: KafkaTopics, tmp_path: Path
) -> None:
    good = sample(number=1)
    bad_file = tmp_path / "bad.json"
    bad_file.write_bytes(
        orjson.dumps(
            [
                good,
                {**sample(number=2), "recipients": []},
                {**sample(number=3), "notification": {"body": "no title"}},
                "not an object",
            ]
        )
    )
    result = publish_cli("--file", str(bad_file), "--topic", kafka.topic, kafka=kafka, cwd=tmp_path)
    assert result.returncode == 2
    assert "nothing published" in result.stderr
    assert "event 2 (event_id 'deal-2'): invalid event: recipients" in result.stderr
    assert "event 3 (event_id 'deal-3'): invalid event: notification.title" in result.stderr
    assert "event 4: event must be a JSON object" in result.stderr
    assert "event 1" not in result.stderr

    lines = orjson.dumps(good) + b"\n{not json\n" + orjson.dumps({**good, "type": ""}) + b"\n"
    result = publish_cli(
        "--file", "-", "--topic", kafka.topic, kafka=kafka, cwd=tmp_path, stdin=lines
    )
    assert result.returncode == 2
    assert "line 2: not JSON" in result.stderr
    assert "line 3 (event_id 'deal-1'): invalid event: type" in result.stderr

    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"event_id": "x",\n')
    result = publish_cli("--file", str(broken), "--topic", kafka.topic, kafka=kafka, cwd=tmp_path)
    assert result.returncode == 2 and "not JSON" in result.stderr

    result = publish_cli("--file", str(tmp_path / "missing.json"), kafka=kafka, cwd=tmp_path)
    assert result.returncode == 2 and "cannot read" in result.stderr

    good_file = tmp_path / "good.json"
    good_file.write_bytes(orjson.dumps(good))
    result = publish_cli("--file", str(good_file), "--topic", kafka.topic, kafka=None, cwd=tmp_path)
    assert result.returncode == 2
    assert "NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS" in result.stderr

    assert await read_topic(kafka, kafka.topic, 0, timeout=1.5) == []


# -- end to end ---------------------------------------------------------------------------


async def test_an_event_published_with_the_helper_reaches_the_recipient(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    kafka: KafkaTopics,
    tenant: str,
) -> None:
    hub: RunningHub = await hub_factory(kafka.settings(hub_settings))
    event = make_event(
        tenant_id=tenant,
        type="deal.won",
        recipients=["alice", "bob"],
        notification={
            "title": "Deal won",
            "body": "ACME renewal",
            "category": "deals",
            "data": {"deal_id": 42},
            "link": "/deals/42",
        },
    )
    # Twice: the hub applies it once.
    assert await publish_events(kafka.bootstrap, [event, event], topic=kafka.topic) == 2
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    found: list[Any] = []

    async def delivered() -> bool:
        status, body = await alice.get("/api/notifications/")
        assert status == 200, body
        found[:] = body["items"]
        return bool(found)

    await eventually(delivered, timeout=30, interval=0.2)
    await _settle_and_check_once(alice, found)
    (item,) = found
    assert (item["title"], item["body"], item["category"]) == ("Deal won", "ACME renewal", "deals")
    assert (item["data"], item["link"], item["user_id"], item["seq"]) == (
        {"deal_id": 42},
        "/deals/42",
        "alice",
        1,
    )
    status, body = await ApiClient.for_user(hub.url, tenant, "bob").get("/api/notifications/")
    assert status == 200 and [n["title"] for n in body["items"]] == ["Deal won"]


async def _settle_and_check_once(client: ApiClient, found: list[Any]) -> None:
    await asyncio.sleep(1.0)  # the duplicate has had time to arrive
    status, body = await client.get("/api/notifications/")
    assert status == 200
    found[:] = body["items"]
    assert len(found) == 1, "the duplicate was applied"


def test_importing_the_producer_loads_no_database_redis_or_services() -> None:
    """CRM modules import hub.producer: it must not drag in the hub's storage stack."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, hub.producer; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = [
        name
        for name in loaded
        if name.split(".")[0] in ("sqlalchemy", "redis", "asyncpg", "db", "tasks", "api")
        or name.startswith(("hub.services", "hub.delivery", "hub.sockets"))
    ]
    assert heavy == []
