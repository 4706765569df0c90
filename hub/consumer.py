"""``notifyhub consume``: the Kafka consumer alone, outside ``serve``.

It emits through the notification bus on Redis (every ``serve`` node delivers to its own
sockets) and queues email tasks on the Redis stream, like ``serve`` would.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

from redis.asyncio import Redis

from db.engine import engine_for, make_session_factory
from hub.delivery.bus import redis_bus
from hub.heartbeat import run_heartbeat
from hub.intake.apply import EventApplier
from hub.intake.kafka import KafkaIntake
from hub.settings import ConfigurationError, Settings
from hub.startup import redis_problem, require_redis, stop_on_signals
from hub.wiring import build_services
from tasks.broker import build_broker

log = logging.getLogger(__name__)


async def run_consumer(settings: Settings, *, stop: asyncio.Event) -> KafkaIntake:
    if not settings.kafka_bootstrap_servers:
        raise ConfigurationError("needs NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS (host:port,...)")
    if not settings.redis_url:
        raise ConfigurationError(
            "needs NOTIFYHUB_REDIS_URL to reach the serve nodes; without "
            "Redis, let `notifyhub serve` consume (NOTIFYHUB_KAFKA_CONSUME_IN_SERVE=true)"
        )
    # Checked once here, for a one-line error; Kafka is not: an unreachable broker is
    # retried with backoff for as long as the process runs (and shown by the heartbeat).
    await require_redis(settings.redis_url)
    engine = engine_for(settings)
    sessions = make_session_factory(engine)
    redis = Redis.from_url(settings.redis_url)
    bus = redis_bus(redis, settings)
    broker = build_broker(settings)
    await broker.startup()
    services = build_services(settings, sessions=sessions, bus=bus, broker=broker)
    apply = EventApplier(
        notifications=services.notifications, emails=services.emails, source="kafka"
    )
    intake = KafkaIntake(settings, apply=apply, limits=services.notifications.limits)
    # Everything imported and built so far lives for the whole process: keep it out of the
    # collector's full passes, which otherwise stall big batches for tens of milliseconds.
    gc.freeze()
    beating: asyncio.Task[None] | None = None
    if settings.heartbeat_file:

        async def probe() -> str | None:
            # Consuming (not connecting, nor paused on a batch the database refused), and
            # Redis, where the serve nodes and workers are reached, answers.
            if not intake.ready:
                return f"Kafka intake {intake.status_line()}"
            return await redis_problem(redis)

        beating = asyncio.create_task(
            run_heartbeat(
                Path(settings.heartbeat_file),
                interval_seconds=settings.heartbeat_interval_seconds,
                probe=probe,
                stop=stop,
            )
        )
    try:
        await intake.run(stop)
    finally:
        if beating is not None:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        await broker.shutdown()
        await redis.aclose()
        await engine.dispose()
    return intake


def main(settings: Settings) -> int:
    async def runner() -> None:
        stop = stop_on_signals()
        intake = await run_consumer(settings, stop=stop)
        log.info(
            "consumer stopped: %d applied, %d duplicates, %d dead-lettered",
            intake.stats.applied,
            intake.stats.duplicates,
            intake.stats.dead_lettered,
        )

    asyncio.run(runner())
    return 0
