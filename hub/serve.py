"""Run the server until SIGINT/SIGTERM, then shut down cleanly (aiohttp's run_app)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from hub.app import create_app
from hub.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_SECONDS = 10.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_server(settings: Settings, *, host: str, port: int) -> None:
    app = create_app(settings)
    log.info("notifyhub serving on http://%s:%s (env=%s)", host, port, settings.env)
    # run_app turns SIGINT/SIGTERM into a graceful exit that runs every cleanup context.
    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        loop=new_event_loop(),
    )
    log.info("notifyhub stopped")
