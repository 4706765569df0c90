"""Build the python-socketio server: in-process manager, or Redis when configured."""

from __future__ import annotations

from typing import Any

import orjson
import socketio
from aiohttp import web

from hub.settings import Settings
from hub.sockets import transport
from hub.sockets.namespaces import NAMESPACE_CLASSES


class OrjsonModule:
    """The ``json``-module interface python-socketio expects, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, *args: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, *args: Any, **kwargs: Any) -> Any:
        return orjson.loads(data)


def build_client_manager(settings: Settings) -> socketio.AsyncManager:
    """Redis when configured (several processes, one hub), else in-process."""
    if settings.redis_url:
        return socketio.AsyncRedisManager(settings.redis_url, channel=settings.socketio_channel)
    return socketio.AsyncManager()


def build_socketio_server(settings: Settings, app: web.Application) -> socketio.AsyncServer:
    server = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=build_client_manager(settings),
        json=OrjsonModule,
        cors_allowed_origins=settings.cors_allowed_origins_list,
        logger=False,
        engineio_logger=False,
    )
    transport.install(server, compress=settings.socketio_websocket_compression)
    for name, namespace_class in NAMESPACE_CLASSES.items():
        server.register_namespace(namespace_class(name, app))
    return server
