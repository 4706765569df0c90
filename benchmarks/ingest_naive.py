"""The naive Kafka intake that ``benchmarks/ingest.py`` compares the hub's batched one with.

One event per transaction, written the way an ORM tutorial would: read a record, look the
event up in ``processed_events``, add a ``ProcessedEvent``, lock and bump each recipient's
``NotificationCounter``, add a ``Notification`` per recipient, commit, publish the new
notifications on the hub's Redis notification bus (so ``serve`` delivers them live), then
commit the record's Kafka offset. Same tables, same exactly-once bookkeeping and same live
delivery as ``notifyhub consume``, just one event at a time.

Configured like ``notifyhub consume`` (``NOTIFYHUB_DATABASE_URL``, ``NOTIFYHUB_REDIS_URL``,
``NOTIFYHUB_SOCKETIO_CHANNEL``, ``NOTIFYHUB_KAFKA_*``); runs until SIGTERM/SIGINT. An event
that fails validation is logged and skipped (no DLQ: the benchmark sends none). Not part
of the hub; run by the benchmark only.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/email.py would shadow the standard library's ``email`` for a script run from
# this folder: take the folder off sys.path and put the repository on it.
_HERE = Path(__file__).resolve().parent
REPO = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import asyncio  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.structs import OffsetAndMetadata  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker  # noqa: E402

from db.engine import make_engine, make_session_factory  # noqa: E402
from db.models import Notification, NotificationCounter, ProcessedEvent  # noqa: E402
from hub.delivery.bus import redis_bus  # noqa: E402
from hub.intake.envelope import BadEvent, EventEnvelope, decode_event  # noqa: E402
from hub.rules import NotificationLimits  # noqa: E402
from hub.services.notifications import serialize  # noqa: E402
from hub.settings import Settings, load_settings  # noqa: E402

log = logging.getLogger("ingest_naive")


async def apply_one(
    sessions: async_sessionmaker[AsyncSession], event: EventEnvelope
) -> list[dict[str, Any]]:
    """Apply one event in its own transaction; the notifications it created."""
    created: list[Notification] = []
    async with sessions() as session, session.begin():
        seen = await session.get(ProcessedEvent, (event.tenant_id, event.event_id))
        if seen is not None:
            return []
        now = datetime.now(UTC)
        session.add(
            ProcessedEvent(
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                type=event.type,
                source="kafka",
                applied_at=now,
            )
        )
        if event.notification is not None:
            for recipient in event.unique_recipients():
                counter = await session.get(
                    NotificationCounter,
                    (event.tenant_id, recipient.user_id),
                    with_for_update=True,
                )
                if counter is None:
                    counter = NotificationCounter(
                        tenant_id=event.tenant_id,
                        user_id=recipient.user_id,
                        last_seq=0,
                        unread_count=0,
                    )
                    session.add(counter)
                counter.last_seq += 1
                counter.unread_count += 1
                notification = Notification(
                    tenant_id=event.tenant_id,
                    user_id=recipient.user_id,
                    seq=counter.last_seq,
                    category=event.notification.category,
                    title=event.notification.title,
                    body=event.notification.body,
                    data=event.notification.data or {},
                    link=event.notification.link,
                    created_at=now,
                )
                session.add(notification)
                created.append(notification)
        await session.flush()  # ids for the live payloads
        payloads = [
            serialize(
                {
                    "id": n.id,
                    "tenant_id": n.tenant_id,
                    "user_id": n.user_id,
                    "seq": n.seq,
                    "category": n.category,
                    "title": n.title,
                    "body": n.body,
                    "data": n.data,
                    "link": n.link,
                    "created_at": n.created_at,
                    "read_at": None,
                }
            )
            for n in created
        ]
    return payloads


async def run(settings: Settings, stop: asyncio.Event) -> int:
    if not (settings.kafka_bootstrap_servers and settings.redis_url):
        raise SystemExit("needs NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS and NOTIFYHUB_REDIS_URL")
    engine = make_engine(settings.database_url, pool_size=settings.database_pool_size)
    sessions = make_session_factory(engine)
    redis = Redis.from_url(settings.redis_url)
    bus = redis_bus(redis, settings)
    limits = NotificationLimits.from_settings(settings)
    consumer = AIOKafkaConsumer(
        settings.kafka_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
    )
    await consumer.start()
    applied = 0
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=1)
            for partition, records in batch.items():
                for record in records:
                    try:
                        event = decode_event(record.value, limits)
                    except BadEvent as exc:
                        log.warning("skipping %s@%d: %s", partition, record.offset, exc)
                    else:
                        created = await apply_one(sessions, event)
                        if created:
                            await bus.publish_new(created)
                        applied += 1
                    await consumer.commit(
                        {
                            TopicPartition(record.topic, record.partition): OffsetAndMetadata(
                                record.offset + 1, ""
                            )
                        }
                    )
    finally:
        await consumer.stop()
        await redis.aclose()
        await engine.dispose()
    return applied


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await run(settings, stop)

    applied = asyncio.run(runner())
    log.warning("naive consumer stopped after %d events", applied)
    return 0


if __name__ == "__main__":
    sys.exit(main())
