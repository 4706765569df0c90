"""The application factory: aiohttp app, Socket.IO server and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import aiohttp
import socketio
from aiohttp import web
from redis.asyncio import Redis

from api.errors import error_middleware
from api.middleware import auth_middleware, request_id_middleware
from api.routes import setup_routes
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_to_head
from hub.auth import JwksCache, TokenVerifier
from hub.keys import (
    DB_ENGINE,
    DB_SESSIONS,
    HTTP_CLIENT,
    REALTIME,
    REDIS,
    SETTINGS,
    SOCKETIO,
    VERIFIER,
)
from hub.realtime import Realtime
from hub.settings import Settings
from hub.sockets.server import build_socketio_server

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]

MAX_REQUEST_BYTES = 1024 * 1024


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
    engine = make_engine(settings.database_url, pool_size=settings.database_pool_size)
    app[DB_ENGINE] = engine
    app[DB_SESSIONS] = make_session_factory(engine)
    try:
        yield
    finally:
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
    app[REALTIME] = Realtime(server)
    try:
        yield
    finally:
        await server.shutdown()


def default_cleanup_contexts() -> list[CleanupContext]:
    """Resources in dependency order; they are torn down in reverse."""
    return [http_client_context, database_context, redis_context, socketio_context]


def create_app(
    settings: Settings, *, cleanup_contexts: Sequence[CleanupContext] | None = None
) -> web.Application:
    """Build the hub. ``cleanup_contexts`` lets a test start only the resources it needs."""
    settings.check_for_production()
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, auth_middleware],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[SETTINGS] = settings
    server: socketio.AsyncServer = build_socketio_server(settings, lambda: app[VERIFIER])
    server.attach(app)
    app[SOCKETIO] = server
    setup_routes(app)
    app.cleanup_ctx.extend(
        default_cleanup_contexts() if cleanup_contexts is None else cleanup_contexts
    )
    return app
