"""All REST routes, in one place. Trailing slashes are optional everywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from api import broadcasts, health

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _add(app: web.Application, method: str, path: str, view: View) -> None:
    app.router.add_route(method, path, view)
    if path.endswith("/") and path != "/":
        app.router.add_route(method, path.rstrip("/"), view)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    _add(app, "POST", "/api/broadcasts/", broadcasts.create_broadcast)
