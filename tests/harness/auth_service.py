"""A small stand-in for the CRM auth service: tenant SMTP settings, templates and a JWKS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

STATE = web.AppKey("stub_state", "AuthServiceStub")


@dataclass
class AuthServiceStub:
    """What the stub serves; tests change these fields while it runs."""

    url: str = ""
    smtp_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    # While set, every call answers this status (e.g. 503) as if the service were down.
    failing_status: int | None = None
    # Seconds every answer is held back (a slow service; lets a test kill a worker mid-task).
    delay_seconds: float = 0.0
    requests: list[str] = field(default_factory=list)


async def _smtp_config(request: web.Request) -> web.Response:
    stub = request.app[STATE]
    config = stub.smtp_configs.get(request.match_info["tenant_id"])
    if config is None:
        return web.json_response({"detail": "not found"}, status=404)
    return web.json_response(config)


async def _template(request: web.Request) -> web.Response:
    stub = request.app[STATE]
    key = (request.match_info["tenant_id"], request.match_info["template_key"])
    template = stub.templates.get(key)
    if template is None:
        return web.json_response({"detail": "not found"}, status=404)
    return web.json_response(template)


async def _jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].jwks)


@web.middleware
async def _record_and_fail(request: web.Request, handler: Any) -> web.StreamResponse:
    stub = request.app[STATE]
    stub.requests.append(request.path)
    if stub.delay_seconds:
        await asyncio.sleep(stub.delay_seconds)
    if stub.failing_status is not None:
        return web.json_response({"detail": "unavailable"}, status=stub.failing_status)
    response: web.StreamResponse = await handler(request)
    return response


def build_stub_app(stub: AuthServiceStub) -> web.Application:
    app = web.Application(middlewares=[_record_and_fail])
    app[STATE] = stub
    app.router.add_get("/api/tenants/{tenant_id}/smtp-config/", _smtp_config)
    app.router.add_get("/api/tenants/{tenant_id}/email-templates/{template_key}/", _template)
    app.router.add_get("/.well-known/jwks.json", _jwks)
    return app


@pytest.fixture
async def auth_service() -> AsyncIterator[AuthServiceStub]:
    stub = AuthServiceStub()
    runner = web.AppRunner(build_stub_app(stub), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stub.url = f"http://127.0.0.1:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()
