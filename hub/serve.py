"""Run the server until SIGINT/SIGTERM, then shut down cleanly (aiohttp's run_app)."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import socket

from aiohttp import web

from db.migrate import DatabaseNotReady
from hub.app import create_app
from hub.settings import Settings, StartupError
from hub.startup import require_redis

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 10.0
# Connections the kernel queues before serve accepts them. aiohttp's default (128)
# overflows in a reconnect storm: dropped SYNs are retried after 1, 3, 7 s, which is how a
# health probe comes to take seconds. The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096


# The collector's full pass scans every live object: ~60 us per connected socket, so 300 ms
# with 5,000 and a reconnect storm sets one off every ~25% of growth. Considering a full
# pass every 1,000 second-generation passes instead of every 10 leaves young garbage
# collected as before and moves full passes out of storms (health probe p99 during a
# 5,000-socket connect storm: 138 ms -> 13 ms).
GC_THRESHOLDS = (700, 10, 1000)


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_server(settings: Settings, *, host: str, port: int) -> None:
    """Serve until a signal. A port that cannot be bound, or a failed auto-migrate, is a
    :class:`StartupError` raised before anything is logged as serving."""
    # Bind first: a port in use is found before the app starts its resources and before
    # anything claims to be serving; run_app then serves on these very sockets.
    listeners = bind_listeners(host, port)
    if settings.admin_port is not None:
        try:
            listeners += bind_listeners(host, settings.admin_port)
        except StartupError:
            for listener in listeners:
                listener.close()
            raise
    if settings.redis_url:
        # Several resources need Redis to start (the task broker creates its stream group):
        # a wrong URL is one line now rather than a traceback after the database migrated.
        try:
            asyncio.run(require_redis(settings.redis_url))
        except StartupError:
            for listener in listeners:
                listener.close()
            raise
    app = create_app(settings)

    async def announce(_app: web.Application) -> None:
        # Everything built so far (modules, models, compiled SQL, settings) lives as long as
        # the process: keep it out of the collector's full passes, which otherwise scan it
        # again and again while connections come and go and stall the loop for 100+ ms.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info("notifyhub serving on http://%s:%s (env=%s)", host, port, settings.env)

    # After the cleanup contexts (registered first): "serving" means every resource started.
    app.on_startup.append(announce)
    try:
        # run_app turns SIGINT/SIGTERM into a graceful exit that runs every cleanup context.
        web.run_app(
            app,
            sock=listeners,
            access_log=None,
            print=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
            # aiohttp closes a connection that has not delivered a complete request head
            # this long after opening or after its previous response: the header timeout
            # (slowloris).
            keepalive_timeout=settings.http_header_timeout_seconds,
            backlog=LISTEN_BACKLOG,
            loop=new_event_loop(),
        )
    except DatabaseNotReady as exc:
        raise StartupError(str(exc)) from None
    finally:
        for listener in listeners:
            listener.close()
    log.info("notifyhub stopped")


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Bound TCP sockets for every address ``host`` resolves to (as asyncio would bind)."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on {host!r}: {exc.strerror}; set --host / NOTIFYHUB_HOST to an "
            "address of this machine (0.0.0.0 for every interface)"
        ) from None
    listeners: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in addresses:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            # As asyncio does on Unix: a restart need not wait out the old sockets' TIME_WAIT.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # "::" must not also take the IPv4 port that its AF_INET twin binds.
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.setblocking(False)
    except OSError as exc:
        for listener in listeners:
            listener.close()
        raise StartupError(_bind_problem(host, port, exc)) from None
    return listeners


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} is in use on {host}: stop the process that holds it or choose "
            "another port (--port / NOTIFYHUB_PORT)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"not allowed to listen on port {port} (ports below 1024 need privileges): "
            "choose another port (--port / NOTIFYHUB_PORT)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host} is not an address of this machine: set --host / NOTIFYHUB_HOST "
            "(0.0.0.0 for every interface)"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
