"""The scheduler of a ``notifyhub worker`` process (started next to the task worker by
``hub.cli``: ``tasks`` and ``hub.intake`` never import each other).

It applies scheduled events and closes digest windows with the same services as ``serve``
(``hub.wiring.build_services``): notifications are published on the Redis bus, which every
``serve`` node delivers from, and emails and pushes queued on the task stream.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from db.engine import engine_for, make_session_factory
from hub.delivery.bus import redis_bus
from hub.intake.apply import EventApplier
from hub.intake.schedule import Scheduler
from hub.settings import Settings
from hub.wiring import build_services
from tasks.broker import build_broker


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    """Apply what comes due until ``stop``; a pass in flight finishes (or, cancelled,
    rolls back whole)."""
    if not settings.redis_url:
        return  # the embedded profile schedules inside serve
    engine = engine_for(settings)
    redis = Redis.from_url(settings.redis_url)
    broker = build_broker(settings)
    await broker.startup()
    try:
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
        await broker.shutdown()
        await redis.aclose()
        await engine.dispose()
