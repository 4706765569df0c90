"""The Kafka source of CRM events: a consumer group, batches, apply once, then commit.

The loop, per ``getmany`` batch:

1. decode every record; the ones that cannot be applied are set aside for the DLQ;
2. apply the good ones in one transaction (:class:`hub.intake.apply.EventApplier`); if the
   database refuses the batch for one event's content, apply them one by one and set
   aside only what it refuses (:func:`hub.intake.runtime.apply_isolating`), so one such
   event never stalls its partition;
3. produce the bad ones to the DLQ (original bytes, the reason and the source position in
   headers) and wait for the broker's acknowledgement;
4. commit the offsets of applied batches (at most every ``kafka_commit_interval_ms``, and
   whenever the topic is idle, partitions are revoked or the consumer stops).

A failure in 2 or 3 (database or Redis down, DLQ unwritable) commits nothing: the consumer
seeks back to the batch's first offsets, waits with backoff and tries the same batch again,
so nothing is lost, nothing is dead-lettered twice by design, and applying again is a no-op
for what was applied. A crash between 2 and 4 redelivers the batch, which the
``processed_events`` keys make harmless.

The rebalance listener commits what was applied before the partitions go to another
consumer, so a rebalance redelivers nothing that was applied here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from hub.intake.envelope import BadEvent, EventEnvelope, decode_event
from hub.intake.runtime import (
    ApplyBatch,
    Backoff,
    IntakePaused,
    apply_isolating,
    quietly,
)
from hub.metrics import EVENTS, KAFKA_LAG
from hub.rules import NotificationLimits
from hub.settings import Settings

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 10.0


@dataclass
class IntakeStats:
    """What the consumer did, for /readyz, metrics and tests."""

    state: str = "starting"
    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    assigned: set[TopicPartition] = field(default_factory=set)


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, intake: KafkaIntake) -> None:
        self._intake = intake

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._intake.commit_pending()
        self._intake.stats.assigned.difference_update(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._intake.stats.assigned.update(assigned)


class KafkaIntake:
    def __init__(
        self,
        settings: Settings,
        *,
        apply: ApplyBatch,
        limits: NotificationLimits,
        consumer_options: dict[str, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._apply = apply
        self._limits = limits
        self._consumer_options = consumer_options or {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        # Applied but not yet committed: committed after the batch, or on revoke.
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self._committed_at = 0.0
        self.stats = IntakeStats()

    @property
    def ready(self) -> bool:
        return self.stats.state == "running"

    def status_line(self) -> str:
        return "ok" if self.ready else f"{self.stats.state}: {self.stats.last_error}"

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; finish the batch in hand, commit, close."""
        backoff = Backoff(maximum=MAX_BACKOFF_SECONDS)
        while not stop.is_set():
            try:
                await self._start()
                backoff.reset()
                await self._consume(stop)
            except (KafkaError, OSError) as exc:
                self.stats.state = "connecting"
                self.stats.last_error = f"kafka: {exc}"
                log.warning("Kafka unavailable (%s); retrying in %.1fs", exc, backoff.current)
                await self._close()
                await backoff.wait(stop)
        await self._close()
        self.stats.state = "stopped"

    async def _start(self) -> None:
        if self._consumer is not None:
            return
        settings = self._settings
        self.stats.state = "connecting"
        options: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap_servers,
            "group_id": settings.kafka_group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": settings.kafka_max_batch,
            "session_timeout_ms": settings.kafka_session_timeout_ms,
            "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
            "rebalance_timeout_ms": settings.kafka_rebalance_timeout_ms,
            "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        }
        options.update(self._consumer_options)
        consumer = AIOKafkaConsumer(**options)
        consumer.subscribe([settings.kafka_topic], listener=_CommitOnRevoke(self))
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=5
        )
        try:
            await consumer.start()
            await producer.start()
        except BaseException:
            await quietly(consumer.stop())
            await quietly(producer.stop())
            raise
        self._consumer, self._producer = consumer, producer
        self.stats.state = "running"
        self.stats.last_error = None

    async def _close(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if consumer is not None:
            await quietly(self.commit_pending(consumer))
            await quietly(consumer.stop())
        if producer is not None:
            await quietly(producer.stop())

    async def _consume(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("consuming before the consumer started")
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            records = [record for partition in batch.values() for record in partition]
            if records:
                # The batch in hand is finished even when stop is set meanwhile.
                await self._process_until_done(records, stop)
            else:
                await self.commit_pending()  # idle: nothing applied stays uncommitted
            await self._record_lag()

    async def _record_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for partition in consumer.assignment():
            end = consumer.highwater(partition)
            if end is None:
                continue
            position = await consumer.position(partition)
            KAFKA_LAG.labels(partition.topic, str(partition.partition)).set(max(0, end - position))

    async def _process_until_done(self, records: list[ConsumerRecord], stop: asyncio.Event) -> None:
        backoff = Backoff(maximum=MAX_BACKOFF_SECONDS)
        while True:
            try:
                await self._process(records)
                self.stats.state = "running"
                return
            except KafkaError:
                raise  # the broker itself: reconnect in run()
            except Exception as exc:  # the database, Redis, ...: pause and retry the batch
                self.stats.state = "paused"
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("event batch not applied (%s); retrying in %.1fs", exc, backoff.current)
                if stop.is_set():
                    return  # nothing committed: the next consumer takes the batch over
                await backoff.wait(stop)

    async def _process(self, records: list[ConsumerRecord]) -> None:
        good: list[tuple[ConsumerRecord, EventEnvelope]] = []
        bad: list[tuple[ConsumerRecord, str]] = []
        for record in records:
            try:
                good.append((record, decode_event(record.value, self._limits)))
            except BadEvent as exc:
                bad.append((record, str(exc)))
        result = await apply_isolating(self._apply, good)
        if result.failure is not None:
            # A dependency is away: nothing of the batch is dead-lettered or committed; the
            # whole batch is tried again (what was applied is a no-op the second time).
            raise IntakePaused(result.failure)
        self.stats.applied += result.applied_events
        self.stats.duplicates += result.duplicates
        bad.extend(result.refused)
        if bad:
            await self._dead_letter(bad)
            self.stats.dead_lettered += len(bad)
            EVENTS.labels("kafka", "dead_lettered").inc(len(bad))
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            self._pending[partition] = OffsetAndMetadata(record.offset + 1, "")
        self.stats.batches += 1
        interval = self._settings.kafka_commit_interval_ms / 1000
        if time.monotonic() - self._committed_at >= interval:
            await self.commit_pending()

    async def _dead_letter(self, bad: list[tuple[ConsumerRecord, str]]) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("dead-lettering before the producer started")
        sent = []
        for record, reason in bad:
            log.info(
                "dead-lettering %s/%d@%d: %s", record.topic, record.partition, record.offset, reason
            )
            headers = [
                ("error", reason.encode()),
                ("source-topic", record.topic.encode()),
                ("source-partition", str(record.partition).encode()),
                ("source-offset", str(record.offset).encode()),
            ]
            sent.append(
                await producer.send(
                    self._settings.kafka_dlq_topic,
                    value=record.value,
                    key=record.key,
                    headers=headers,
                )
            )
        # Committed only once the DLQ holds them.
        await asyncio.gather(*sent)

    async def commit_pending(self, consumer: AIOKafkaConsumer | None = None) -> None:
        consumer = consumer or self._consumer
        if not self._pending or consumer is None:
            return
        offsets, self._pending = self._pending, {}
        self._committed_at = time.monotonic()
        try:
            await consumer.commit(offsets)
        except Exception:
            # Keep them for the next try; re-applying is harmless, losing them is not.
            for partition, offset in offsets.items():
                self._pending.setdefault(partition, offset)
            raise
