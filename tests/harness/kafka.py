"""Kafka helpers for the intake tests: a topic and group of each test's own, producing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hub.settings import Settings

# Test-only group timings (real Kafka refuses a session timeout under 6 s): joins and rebalances in ~1 s on Tansu.
FAST_GROUP = {
    "kafka_session_timeout_ms": 1000,
    "kafka_heartbeat_interval_ms": 200,
    "kafka_rebalance_timeout_ms": 1000,
}


@dataclass
class KafkaTopics:
    bootstrap: str
    topic: str
    dlq: str
    group: str

    def settings(self, base: Callable[..., Settings], **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.bootstrap,
            "kafka_topic": self.topic,
            "kafka_dlq_topic": self.dlq,
            "kafka_group_id": self.group,
            **FAST_GROUP,
        }
        values.update(overrides)
        return base(**values)

    async def produce(self, values: Sequence[bytes], *, key: bytes | None = None) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        try:
            for value in values:
                await producer.send(self.topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    async def produce_events(self, events: Sequence[dict[str, Any]]) -> None:
        await self.produce([orjson.dumps(event) for event in events])

    async def read_dlq(self, expected: int, timeout_ms: int = 10_000) -> list[Any]:
        consumer = AIOKafkaConsumer(
            self.dlq,
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.group}-dlq-reader",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[Any] = []
        try:
            for _ in range(20):
                batch = await consumer.getmany(timeout_ms=timeout_ms // 20)
                records += [r for rs in batch.values() for r in rs]
                if len(records) >= expected:
                    break
        finally:
            await consumer.stop()
        return records


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaTopics]:
    """A topic (4 partitions), a DLQ topic and a consumer group of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    topics = KafkaTopics(
        bootstrap=kafka_bootstrap,
        topic=f"crm.events.{suffix}",
        dlq=f"crm.events.{suffix}.dlq",
        group=f"notifyhub-{suffix}",
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topics.topic, num_partitions=4, replication_factor=1),
                NewTopic(topics.dlq, num_partitions=1, replication_factor=1),
            ]
        )
    finally:
        await admin.close()
    yield topics
