"""REST errors keep the documented shape; every request has an id that reaches the logs."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest

from hub.logs import RequestIdFilter
from tests.harness.hub import RunningHub
from tests.harness.tokens import hs256_token


async def call(
    hub: RunningHub, method: str, path: str, *, data: bytes | None = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{hub.url}{path}", data=data, headers=headers) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json(), dict(response.headers)


def service_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {hs256_token(tenant='t-err', user='crm', roles=['service'])}"}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nothing-here", 404, "not_found"),
        ("GET", "/api/nothing-here/", 401, "unauthorized"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
    ],
)
async def test_http_errors_are_json(
    hub: RunningHub, method: str, path: str, status: int, code: str
) -> None:
    got_status, body, _ = await call(hub, method, path)
    assert got_status == status
    assert body["error"]["code"] == code
    assert set(body["error"]) == {"code", "message", "details"}


async def test_unknown_api_route_with_token_is_404(hub: RunningHub) -> None:
    status, body, _ = await call(hub, "GET", "/api/nothing-here/", **service_headers())
    assert (status, body["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"title": 5, "body": "x"}', "validation_error"),
        (b'{"title": "t", "body": "b", "unknown": 1}', "validation_error"),
        (
            b'{"title": "t", "body": "b", "data": {"blob": "' + b"x" * 20_000 + b'"}}',
            "validation_error",
        ),
    ],
)
async def test_bad_bodies_are_400_with_details(hub: RunningHub, raw: bytes, code: str) -> None:
    status, body, _ = await call(hub, "POST", "/api/broadcasts/", data=raw, **service_headers())
    assert status == 400
    assert body["error"]["code"] == code
    assert "Traceback" not in str(body)


async def test_oversized_body_is_413(hub: RunningHub) -> None:
    status, body, _ = await call(
        hub, "POST", "/api/broadcasts/", data=b"x" * (2 * 1024 * 1024), **service_headers()
    )
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


async def test_request_id_is_echoed_and_logged(
    hub_factory: Any, hub_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A hub whose database is unreachable logs a warning inside the /readyz request.
    sick = await hub_factory(
        hub_settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/none")
    )
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.WARNING):
        status, _, headers = await call(sick, "GET", "/readyz", **{"X-Request-ID": "req-42"})
    assert status == 503
    assert headers["X-Request-ID"] == "req-42"
    warnings = [r for r in caplog.records if "readiness check failed" in r.getMessage()]
    assert warnings and all(getattr(r, "request_id", None) == "req-42" for r in warnings)

    _, _, generated = await call(sick, "GET", "/healthz")
    assert len(generated["X-Request-ID"]) == 32


async def test_a_500_raised_by_a_library_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp-jinja2 answers a missing template with HTTPInternalServerError: the reply is
    the JSON shape, and the log says what happened (it used to say nothing)."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from api.errors import error_middleware

    async def broken(_request: web.Request) -> web.Response:
        raise web.HTTPInternalServerError(reason="Template 'playground.html' not found")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/broken", broken)
    caplog.set_level(logging.ERROR)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/broken")
        assert response.status == 500
        assert (await response.json())["error"]["code"] == "internal_error"
    assert any("playground.html" in r.getMessage() for r in caplog.records if r.levelno >= 40)
