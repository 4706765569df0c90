"""``notifyhub worker``: run email and push tasks and send webhooks from the Redis stream
until SIGTERM/SIGINT, and the retention purge every ``NOTIFYHUB_PURGE_INTERVAL_SECONDS``.

Shutdown is bounded: stop taking tasks, give running ones ``worker_shutdown_seconds`` to
finish, then cancel them (unacknowledged, so another worker picks them up). This is our own
loop around taskiq's ``Receiver`` rather than ``taskiq worker``: with redis-py 8 and
``RedisStreamBroker``, ``taskiq worker`` did not stop on SIGTERM for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from taskiq.acks import AcknowledgeType
from taskiq.receiver import Receiver

from hub.delivery.routes import RoutedPresence, notification_routes_prefix
from hub.heartbeat import run_heartbeat
from hub.presence import RedisPresenceStore
from hub.services.retention import Purge, PurgePolicy
from hub.settings import ConfigurationError, Settings
from hub.startup import database_problem, redis_problem, require_redis, stop_on_signals
from tasks.broker import build_broker
from tasks.email import RESOURCES_STATE
from tasks.push import RESOURCES_STATE as PUSH_RESOURCES_STATE
from tasks.push import push_resources, push_sweeper
from tasks.resources import email_resources
from tasks.sweeper import EmailSweeper, Sweeper
from tasks.webhooks import webhook_resources, webhook_sweeper

log = logging.getLogger(__name__)

# Past the graceful window, the process exits even if a library refuses to be cancelled.
HARD_EXIT_GRACE_SECONDS = 1.5


async def run_worker(settings: Settings, *, stop: asyncio.Event) -> None:
    if not settings.redis_url:
        raise ConfigurationError(
            "needs NOTIFYHUB_REDIS_URL: on the embedded defaults email tasks run inside "
            "`notifyhub serve`"
        )
    # A wrong URL is found here, in one line, rather than as a traceback from the broker.
    await require_redis(settings.redis_url)
    broker = build_broker(settings)
    broker.is_worker_process = True
    redis = Redis.from_url(settings.redis_url)
    # Push's "connected anywhere?" (policy ``offline``): the serve nodes' route map.
    presence = RoutedPresence(RedisPresenceStore(redis, notification_routes_prefix(settings)))
    async with (
        contextlib.aclosing(redis),
        email_resources(settings) as resources,
        aiohttp.ClientSession() as http,
        push_resources(
            settings, sessions=resources.sessions, http=http, presence=presence
        ) as pushing,
        webhook_resources(settings, sessions=resources.sessions) as hooking,
    ):
        setattr(broker.state, RESOURCES_STATE, resources)
        setattr(broker.state, PUSH_RESOURCES_STATE, pushing)
        await broker.startup()
        receiver = Receiver(
            broker,
            max_async_tasks=settings.email_worker_concurrency,
            # Acknowledged only once the task ran: a worker killed mid-task leaves it pending
            # for another worker to reclaim.
            ack_type=AcknowledgeType.WHEN_EXECUTED,
            run_startup=False,
            propagate_exceptions=False,
        )
        finish = asyncio.Event()
        listening = asyncio.create_task(receiver.listen(finish))
        # Due retries and emails the stream lost track of; its own slots, so retries never
        # wait behind (or hold up) new tasks.
        sweepers: list[Sweeper[Any]] = [
            EmailSweeper.for_worker(resources),
            push_sweeper(pushing),
            webhook_sweeper(hooking),
        ]
        sweeping = [asyncio.create_task(s.run(), name=f"{s.what}-sweeper") for s in sweepers]
        # Retention: bounded batches with SKIP LOCKED, so several workers purging at once
        # neither wait on each other nor delete anything twice.
        purge = Purge(resources.sessions, PurgePolicy.from_settings(settings))
        purging = asyncio.create_task(
            purge.run_every(settings.purge_interval_seconds), name="purge"
        )
        log.info("worker started (concurrency %d)", settings.email_worker_concurrency)
        beating = _start_heartbeat(settings, listening, stop, resources.sessions)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if beating is not None:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        log.info(
            "worker stopping: waiting up to %.0fs for running tasks",
            settings.worker_shutdown_seconds,
        )
        finish.set()
        for sweeper in sweepers:
            sweeper.stop()
        # A batch is one short transaction: cancelling rolls back at most that one.
        purging.cancel()
        await asyncio.gather(purging, return_exceptions=True)
        # The sweepers' attempts get the same window as the receiver's tasks, in parallel,
        # however early the receiver is done.
        window_ends = asyncio.get_running_loop().time() + settings.worker_shutdown_seconds
        sweepers_closed = [
            asyncio.create_task(s.close(settings.worker_shutdown_seconds)) for s in sweepers
        ]
        try:
            await asyncio.wait_for(asyncio.shield(listening), settings.worker_shutdown_seconds)
        except TimeoutError:
            listening.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(listening, HARD_EXIT_GRACE_SECONDS)
        except Exception:
            log.exception("worker listener failed")
        left = max(0.0, window_ends - asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(
                asyncio.gather(*sweeping, *sweepers_closed), left + HARD_EXIT_GRACE_SECONDS + 1.0
            )
        try:
            await asyncio.wait_for(broker.shutdown(), HARD_EXIT_GRACE_SECONDS)
        except TimeoutError:
            log.warning("broker shutdown timed out")
    log.info("worker stopped")


def _start_heartbeat(
    settings: Settings,
    listening: asyncio.Task[None],
    stop: asyncio.Event,
    sessions: async_sessionmaker[AsyncSession],
) -> asyncio.Task[None] | None:
    """Healthy while the task listener runs and Redis and the database answer
    (NOTIFYHUB_HEARTBEAT_FILE): every attempt and the sweeper need both."""
    if not settings.heartbeat_file or not settings.redis_url:
        return None
    redis = Redis.from_url(settings.redis_url)

    async def probe() -> str | None:
        if listening.done():
            return "the task listener stopped"
        return await redis_problem(redis) or await database_problem(sessions)

    async def beat() -> None:
        try:
            await run_heartbeat(
                Path(settings.heartbeat_file or ""),
                interval_seconds=settings.heartbeat_interval_seconds,
                probe=probe,
                stop=stop,
            )
        finally:
            await redis.aclose()

    return asyncio.create_task(beat())


# Something else the worker process runs until the same stop (the scheduler, which
# ``hub.cli`` passes in: it applies events, which this package must not import).
Companion = Callable[[Settings, asyncio.Event], Coroutine[None, None, None]]


def main(settings: Settings, *, companion: Companion | None = None) -> int:
    """Run until a signal; never hang past the shutdown window."""

    async def runner() -> None:
        stop = stop_on_signals()
        worker = asyncio.create_task(run_worker(settings, stop=stop))
        beside = None if companion is None else asyncio.create_task(companion(settings, stop))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if beside is not None and not stop.is_set():
            # The worker ended on its own (it could not start): its error is what to say.
            beside.cancel()
            await asyncio.gather(beside, return_exceptions=True)
        elif beside is not None:
            try:
                await asyncio.wait_for(beside, settings.worker_shutdown_seconds)
            except TimeoutError:
                log.warning("the scheduler did not stop in time")
            except Exception:
                log.exception("the scheduler failed")
        # The window, the listener's grace, the sweeper's grace and the broker's shutdown.
        deadline = settings.worker_shutdown_seconds + 3 * HARD_EXIT_GRACE_SECONDS + 1.0
        try:
            await asyncio.wait_for(asyncio.shield(worker), deadline)
        except TimeoutError:
            log.error("worker did not stop within %.0fs; exiting anyway", deadline)
            logging.shutdown()
            os._exit(1)

    asyncio.run(runner())
    return 0
