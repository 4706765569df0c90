"""The scheduler of a ``notifyhub worker`` process (started next to the task worker by
``hub.cli``: ``tasks`` and ``hub.intake`` never import each other).

It applies scheduled events and closes digest windows with the same services as ``serve``
(``hub.wiring.build_services``): notifications are published on the Redis bus, which every
``serve`` node delivers from, and emails and pushes queued on the task stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from db.engine import engine_for, make_session_factory
from hub.delivery.bus import redis_bus
from hub.intake.apply import EventApplier
from hub.intake.schedule import Scheduler
from hub.settings import Settings
from hub.wiring import build_services
from tasks.broker import build_broker

log = logging.getLogger(__name__)

# How long a scheduler that could not start waits before trying again.
RETRY_SECONDS = 2.0


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    """Apply what comes due until ``stop``; a pass in flight finishes (or, cancelled,
    rolls back whole). Redis or the database away at start is waited for: the scheduled
    work waits in the database meanwhile."""
    if not settings.redis_url:
        return  # the embedded profile schedules inside serve
    while not stop.is_set():
        try:
            await _schedule(settings, stop)
            return
        except (RedisError, OSError, SQLAlchemyError) as exc:
            log.warning("scheduler cannot start (%s); trying again", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_SECONDS)


async def _schedule(settings: Settings, stop: asyncio.Event) -> None:
    engine = engine_for(settings)
    redis = Redis.from_url(settings.redis_url or "")
    broker = build_broker(settings)
    try:
        await broker.startup()
        services = build_services(
            settings,
            sessions=make_session_factory(engine),
            bus=redis_bus(redis, settings),
            broker=broker,
        )
        applier = EventApplier(
            notifications=services.notifications, emails=services.emails, source="schedule"
        )
        scheduler = Scheduler(
            applier,
            interval=settings.scheduler_interval_seconds,
            batch=settings.scheduler_batch,
        )
        await scheduler.run(stop)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await broker.shutdown()
        await redis.aclose()
        await engine.dispose()
