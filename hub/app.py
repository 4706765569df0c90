"""The application factory: aiohttp app, Socket.IO server and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import aiohttp
import orjson
import socketio
from aiohttp import web
from redis.asyncio import Redis

from api.errors import error_middleware, quiet_client_protocol_errors
from api.middleware import (
    admin_port_middleware,
    auth_middleware,
    body_timeout_middleware,
    request_id_middleware,
)
from api.playground import setup_playground
from api.routes import setup_routes
from api.socketio_http import attach_socketio
from api.unsubscribe import setup_pages
from db.engine import engine_for, make_session_factory
from db.migrate import SchemaCheck, upgrade_to_head
from db.outage import DatabaseStatus
from hub.auth import JwksCache, TokenVerifier
from hub.delivery.bus import LocalBus, RedisBus, UserEmit, redis_bus
from hub.delivery.chat import ChatDelivery
from hub.delivery.node import NodeDelivery
from hub.delivery.notifications import NotificationDelivery
from hub.delivery.routes import RouteTables, notification_tracker
from hub.intake.apply import EventApplier
from hub.intake.kafka import KafkaIntake
from hub.intake.rabbitmq import RabbitIntake
from hub.intake.schedule import Scheduler
from hub.keys import (
    CHAT,
    CHAT_BUS,
    CHAT_DELIVERY,
    CHAT_ROUTES,
    DATA_RIGHTS,
    DB_ENGINE,
    DB_SESSIONS,
    DEVICES,
    DISCONNECT_BUS,
    EMAILS,
    HTTP_CLIENT,
    KAFKA_INTAKE,
    LEGACY_SOCKETS,
    NOTIFICATION_BUS,
    NOTIFICATION_DELIVERY,
    NOTIFICATION_ROUTES,
    NOTIFICATIONS,
    PREFERENCES,
    PRESENCE,
    RABBITMQ_INTAKE,
    REALTIME,
    REDIS,
    REST_EVENTS,
    SCHEDULE,
    SCHEDULER,
    SCHEMA_CHECK,
    SETTINGS,
    SOCKETIO,
    TENANT_SETTINGS,
    TYPING,
    VERIFIER,
    WEBHOOKS,
)
from hub.metrics import register_pool, unregister
from hub.presence import (
    LocalPresenceStore,
    PresenceTracker,
)
from hub.realtime import Realtime
from hub.services import chat
from hub.services.chat import ChatLimits, ChatService
from hub.services.data_rights import DataRightsService
from hub.services.notifications import counts_event, latest_seqs, replay_page
from hub.services.presence import PresenceService
from hub.services.ratelimit import LocalTokenBucket, RateLimiter, RedisTokenBucket
from hub.services.retention import Purge, PurgePolicy
from hub.services.tenants import TenantSettingsService
from hub.services.typing_indicators import (
    LocalTypingState,
    RedisTypingState,
    TypingRelay,
    TypingState,
)
from hub.settings import Settings
from hub.sockets import transport
from hub.sockets.server import build_socketio_server
from hub.wiring import build_services
from tasks.broker import build_broker
from tasks.email import RESOURCES_STATE
from tasks.push import RESOURCES_STATE as PUSH_RESOURCES_STATE
from tasks.push import push_resources, push_sweeper
from tasks.resources import email_resources
from tasks.sweeper import EmailSweeper, Sweeper
from tasks.webhooks import webhook_resources, webhook_sweeper

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

MAX_REQUEST_BYTES = 1024 * 1024
SOURCE_STOP_SECONDS = 15.0
# How long closing connections get to send their last frames at shutdown.
SHUTDOWN_FLUSH_SECONDS = 1.0


async def http_client_context(app: web.Application) -> AsyncIterator[None]:
    """Outgoing HTTP (JWKS, auth service) and the token verifier that may need it."""
    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as session:
        app[HTTP_CLIENT] = session
        jwks = None
        if settings.jwt_jwks_url:
            jwks = JwksCache(
                settings.jwt_jwks_url,
                session,
                ttl_seconds=settings.jwks_cache_seconds,
                min_refetch_seconds=settings.jwks_min_refetch_seconds,
            )
        app[VERIFIER] = TokenVerifier(settings, jwks=jwks)
        yield


async def database_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if settings.should_auto_migrate:
        await asyncio.to_thread(upgrade_to_head, settings.database_url)
    engine = engine_for(settings)
    DatabaseStatus().watch(engine)
    app[DB_ENGINE] = engine
    app[DB_SESSIONS] = make_session_factory(engine)
    schema = SchemaCheck(engine)
    app[SCHEMA_CHECK] = schema
    try:
        problem = await asyncio.wait_for(schema.problem(), timeout=5)
    except Exception as exc:  # the database may be down at start; /readyz keeps asking
        log.warning("database not reachable at start: %s", exc)
    else:
        if problem is not None:
            # Serve anyway (a rolling deploy may migrate next); /readyz says 503 until then.
            log.warning("database schema is behind: %s", problem)
    pool_metric = register_pool(getattr(engine.pool, "checkedout", lambda: 0))
    try:
        yield
    finally:
        unregister(pool_metric)
        await engine.dispose()


async def redis_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.redis_url:
        yield
        return
    redis = Redis.from_url(settings.redis_url)
    app[REDIS] = redis
    try:
        yield
    finally:
        await redis.aclose()


async def socketio_context(app: web.Application) -> AsyncIterator[None]:
    server = app[SOCKETIO]
    # python-socketio starts listening to Redis only at the first connection; start now so
    # emits from other nodes are never missed by the first clients of this one.
    if not server.manager_initialized:
        server.manager_initialized = True
        server.manager.initialize()
    bus = app[NOTIFICATION_BUS]
    # With Redis, chat events go to the nodes of their users over the routed bus.
    app[REALTIME] = Realtime(server, routed=bus if isinstance(bus, RedisBus) else None)
    try:
        yield
    finally:
        await server.shutdown()
        # The manager's Redis listener is not stopped by shutdown(): stop it, or it retries a
        # Redis that went away for as long as the process lives.
        listener = getattr(server.manager, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


async def routing_context(app: web.Application) -> AsyncIterator[None]:
    """The bus (routed Redis pub/sub, or in-process) and this node's records in the route
    maps (hub.delivery.routes), kept up to date until shutdown."""
    settings = app[SETTINGS]
    redis = app.get(REDIS)
    tables = (
        RouteTables(LocalPresenceStore(), LocalPresenceStore())
        if redis is None
        else RouteTables.in_redis(redis, settings)
    )
    notifications = notification_tracker(tables.notifications, settings, node=uuid.uuid4().hex)
    node = notifications.node
    # The chat presence tracker is the /chat route map too: one node name for both.
    chat_tracker = PresenceTracker(
        tables.chat,
        grace_seconds=settings.presence_grace_seconds,
        node_ttl_seconds=settings.presence_node_ttl_seconds,
        node=node,
    )
    app[NOTIFICATION_ROUTES] = notifications
    app[CHAT_ROUTES] = chat_tracker
    bus: LocalBus | RedisBus = (
        LocalBus() if redis is None else redis_bus(redis, settings, node=node)
    )
    app[NOTIFICATION_BUS] = bus
    app[CHAT_BUS] = bus
    app[DISCONNECT_BUS] = bus
    trackers = (notifications, chat_tracker)
    for tracker in trackers:
        tracker.start()
    try:
        yield
    finally:
        for tracker in trackers:
            await tracker.close()


async def notification_delivery_context(app: web.Application) -> AsyncIterator[None]:
    """This node's live delivery of notifications and chat messages, fed by the bus."""
    settings = app[SETTINGS]
    realtime = app[REALTIME]
    redis = app.get(REDIS)
    routed = redis is not None

    async def emit_here(emit: UserEmit) -> None:
        await realtime.emit_here(
            tenant_id=emit.tenant_id,
            user_ids=emit.user_ids,
            event=emit.event,
            data=orjson.loads(emit.json),
            namespace=emit.namespace,
        )

    delivery = NodeDelivery(
        NotificationDelivery(
            sessions=app[DB_SESSIONS],
            fetch_after=replay_page,
            latest_seqs=latest_seqs,
            counts_event=counts_event,
            routes=app[NOTIFICATION_ROUTES] if routed else None,
        ),
        ChatDelivery(
            sessions=app[DB_SESSIONS],
            fetch_after=chat.replay_page,
            latest_seqs=chat.latest_seqs,
            conversation_seqs=chat.conversation_seqs,
            routes=app[CHAT_ROUTES] if routed else None,
        ),
        emit_here=emit_here,
    )
    app[NOTIFICATION_DELIVERY] = delivery.notifications
    app[CHAT_DELIVERY] = delivery.chat
    listening: asyncio.Task[None] | None = None
    bus = app[NOTIFICATION_BUS]
    if isinstance(bus, LocalBus):
        bus.listener = delivery
    elif isinstance(bus, RedisBus):
        subscribed = asyncio.Event()
        listening = asyncio.create_task(bus.run(delivery, subscribed=subscribed))
        try:
            # Serve only once this node hears the bus; if Redis is down, start anyway (the
            # listener keeps retrying and /readyz reports Redis).
            await asyncio.wait_for(subscribed.wait(), timeout=5)
        except TimeoutError:
            log.warning("notification bus not subscribed yet; continuing")
    # With a bus that can lose messages (Redis away, a publisher dead after its commit),
    # the database is checked for what never came.
    watching = (
        asyncio.create_task(delivery.watch_for_lag(settings.delivery_lag_check_seconds))
        if routed
        else None
    )
    try:
        yield
    finally:
        for task in (listening, watching):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await delivery.close()


async def retention_context(app: web.Application) -> AsyncIterator[None]:
    """Tenant settings; on the embedded profile (no worker) the purge schedule runs here."""
    settings = app[SETTINGS]
    app[TENANT_SETTINGS] = TenantSettingsService(
        sessions=app[DB_SESSIONS], max_retention_days=settings.retention_days
    )
    purging: asyncio.Task[None] | None = None
    if settings.redis_url is None:
        purge = Purge(app[DB_SESSIONS], PurgePolicy.from_settings(settings))
        purging = asyncio.create_task(purge.run_every(settings.purge_interval_seconds))
    try:
        yield
    finally:
        if purging is not None:
            purging.cancel()
            await asyncio.gather(purging, return_exceptions=True)


async def chat_context(app: web.Application) -> AsyncIterator[None]:
    """Send rate limits and typing state: in Redis when configured, so all nodes share them."""
    settings = app[SETTINGS]
    redis = app.get(REDIS)
    prefix = f"{settings.socketio_channel}:"
    if redis is None:
        limiter: RateLimiter = LocalTokenBucket(
            rate_per_second=settings.chat_send_rate_per_second, burst=settings.chat_send_burst
        )
        state: TypingState = LocalTypingState(
            throttle_seconds=settings.typing_throttle_seconds, clock=time.monotonic
        )
    else:
        limiter = RedisTokenBucket(
            redis,
            prefix=prefix + "rate:send:",
            rate_per_second=settings.chat_send_rate_per_second,
            burst=settings.chat_send_burst,
        )
        state = RedisTypingState(
            redis,
            prefix=prefix + "typing:",
            throttle_seconds=settings.typing_throttle_seconds,
            expiry_seconds=settings.typing_expiry_seconds,
        )
    app[CHAT] = ChatService(
        sessions=app[DB_SESSIONS],
        realtime=app[REALTIME],
        bus=app[CHAT_BUS],
        limiter=limiter,
        limits=ChatLimits.from_settings(settings),
    )
    relay = TypingRelay(
        state=state, realtime=app[REALTIME], expiry_seconds=settings.typing_expiry_seconds
    )
    app[TYPING] = relay
    try:
        yield
    finally:
        await relay.close()


async def presence_context(app: web.Application) -> AsyncIterator[None]:
    """Who is connected to /chat on any node: the chat route map's tracker (in Redis when
    configured, else in-process), announced by the presence service."""
    app[PRESENCE] = PresenceService(
        sessions=app[DB_SESSIONS], realtime=app[REALTIME], tracker=app[CHAT_ROUTES]
    )
    yield


async def task_broker_context(app: web.Application) -> AsyncIterator[None]:
    """The email task broker. On the embedded defaults tasks also run here, in-process;
    with Redis, serve only queues them for ``notifyhub worker`` processes."""
    settings = app[SETTINGS]
    broker = build_broker(settings)
    sessions = app[DB_SESSIONS]
    services = build_services(settings, sessions=sessions, bus=app[NOTIFICATION_BUS], broker=broker)
    app[NOTIFICATIONS] = services.notifications
    app[EMAILS] = services.emails
    app[DEVICES] = services.devices
    app[WEBHOOKS] = services.webhooks
    app[PREFERENCES] = services.preferences
    app[SCHEDULE] = services.schedule
    app[DATA_RIGHTS] = DataRightsService(sessions=sessions, bus=app[DISCONNECT_BUS])
    app[REST_EVENTS] = event_applier(app, "rest")
    if settings.redis_url:
        # Workers send; serve only queues (no SMTP pool, lease keeper or sweeper here).
        await broker.startup()
        try:
            yield
        finally:
            await broker.shutdown()
        return
    async with (
        email_resources(settings, sessions=sessions, http=app[HTTP_CLIENT]) as resources,
        push_resources(
            settings,
            sessions=sessions,
            http=app[HTTP_CLIENT],
            presence=app[NOTIFICATION_DELIVERY],  # one process: its sockets are all there are
        ) as pushing,
        webhook_resources(settings, sessions=sessions) as hooking,
    ):
        setattr(broker.state, RESOURCES_STATE, resources)
        setattr(broker.state, PUSH_RESOURCES_STATE, pushing)
        # No worker process on the embedded defaults: due retries are swept here.
        sweepers: list[Sweeper[Any]] = [
            EmailSweeper.for_worker(resources),
            push_sweeper(pushing),
            webhook_sweeper(hooking),
        ]
        await broker.startup()
        sweeping = [asyncio.create_task(s.run(), name=f"{s.what}-sweeper") for s in sweepers]
        # And scheduled events and digest windows, which workers handle otherwise.
        scheduler = Scheduler(
            event_applier(app, "schedule"),
            interval=settings.scheduler_interval_seconds,
            batch=settings.scheduler_batch,
        )
        app[SCHEDULER] = scheduler
        stop_scheduling = asyncio.Event()
        scheduling = asyncio.create_task(scheduler.run(stop_scheduling), name="scheduler")
        try:
            yield
        finally:
            stop_scheduling.set()
            await asyncio.gather(scheduling, return_exceptions=True)
            for sweeper in sweepers:
                sweeper.stop()
            await asyncio.gather(*sweeping)
            for sweeper in sweepers:
                await sweeper.close(settings.worker_shutdown_seconds)
            await broker.shutdown()


def event_applier(app: web.Application, source: str) -> EventApplier:
    """What an event source applies its batches with, on this process's resources."""
    return EventApplier(
        notifications=app[NOTIFICATIONS],
        emails=app[EMAILS],
        source=source,
    )


class Runnable(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


@contextlib.asynccontextmanager
async def running_in_background(source: Runnable, name: str) -> AsyncIterator[None]:
    """Run an event source while the app serves; on the way out, let it finish the batch in
    hand (bounded: a source that does not stop in time is cancelled)."""
    stop = asyncio.Event()
    consuming = asyncio.create_task(source.run(stop), name=f"{name} intake")
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(consuming, timeout=SOURCE_STOP_SECONDS)
        except TimeoutError:
            log.warning("%s intake did not stop in time", name)


async def kafka_intake_context(app: web.Application) -> AsyncIterator[None]:
    """Consume CRM events inside serve when Kafka is configured (and not turned off).

    Runs as a background task: an unreachable broker is retried and shown by /readyz while
    the HTTP side keeps serving.
    """
    settings = app[SETTINGS]
    if not settings.kafka_bootstrap_servers or not settings.kafka_consume_in_serve:
        yield
        return
    intake = KafkaIntake(
        settings, apply=event_applier(app, "kafka"), limits=app[NOTIFICATIONS].limits
    )
    app[KAFKA_INTAKE] = intake
    async with running_in_background(intake, "Kafka"):
        yield


async def rabbitmq_intake_context(app: web.Application) -> AsyncIterator[None]:
    """Consume CRM events from RabbitMQ inside serve when NOTIFYHUB_RABBITMQ_URL is set."""
    settings = app[SETTINGS]
    if not settings.rabbitmq_url:
        yield
        return
    intake = RabbitIntake(
        url=settings.rabbitmq_url,
        queue=settings.rabbitmq_queue,
        dead_letter_exchange=settings.rabbitmq_dead_letter_exchange,
        apply=event_applier(app, "rabbitmq"),
        limits=app[NOTIFICATIONS].limits,
        prefetch=settings.rabbitmq_prefetch,
        batch_max=settings.rabbitmq_max_batch,
        batch_wait_seconds=settings.rabbitmq_batch_wait_seconds,
    )
    app[RABBITMQ_INTAKE] = intake
    async with running_in_background(intake, "RabbitMQ"):
        yield


async def close_client_connections(app: web.Application) -> None:
    """On shutdown, end every client connection at once instead of waiting for each close
    handshake: the process exits in seconds, and clients reconnect to another node and
    resume from their ``last_seq``, losing nothing."""
    closing = transport.close_all(app[SOCKETIO])
    legacy_sockets = app[LEGACY_SOCKETS]
    for socket in list(legacy_sockets):
        if socket._writer is not None:
            transport.going_away(socket._writer)
            closing.append(socket._writer.transport)
    await transport.abort_unflushed(closing, grace=SHUTDOWN_FLUSH_SECONDS)


def default_cleanup_contexts() -> list[CleanupContext]:
    """Resources in dependency order; they are torn down in reverse."""
    return [
        http_client_context,
        database_context,
        redis_context,
        routing_context,
        socketio_context,
        notification_delivery_context,
        retention_context,
        chat_context,
        presence_context,
        task_broker_context,
        kafka_intake_context,
        rabbitmq_intake_context,
    ]


def create_app(
    settings: Settings, *, cleanup_contexts: Sequence[CleanupContext] | None = None
) -> web.Application:
    """Build the hub. ``cleanup_contexts`` lets a test start only the resources it needs."""
    settings.check_for_production()
    quiet_client_protocol_errors()
    app = web.Application(
        middlewares=[
            request_id_middleware,
            error_middleware,
            *([admin_port_middleware(settings.admin_port)] if settings.admin_port else []),
            auth_middleware,
            body_timeout_middleware,
        ],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[SETTINGS] = settings
    server: socketio.AsyncServer = build_socketio_server(settings, app)
    attach_socketio(app, server)
    app[SOCKETIO] = server
    app[LEGACY_SOCKETS] = set()
    app.on_shutdown.append(close_client_connections)
    setup_routes(app)
    setup_pages(app)
    if settings.playground_enabled:
        setup_playground(app, settings)
    app.cleanup_ctx.extend(
        default_cleanup_contexts() if cleanup_contexts is None else cleanup_contexts
    )
    return app
