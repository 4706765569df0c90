"""AuthServiceClient against the stub auth service over real HTTP: caching, errors, sharing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tasks.auth_service import (
    AuthServiceClient,
    AuthServiceError,
    AuthServiceUnavailable,
    NotConfigured,
    SmtpConfig,
)
from tasks.templates import EmailTemplate
from tests.harness.auth_service import AuthServiceStub
from tests.harness.ports import free_port

SMTP = {
    "host": "smtp.acme.test",
    "port": 587,
    "username": "mailer",
    "password": "s3cret-Pa55",
    "use_tls": False,
    "start_tls": True,
    "from_email": "jobs@acme.test",
    "from_name": "Acme Jobs",
}
SMTP_PATH = "/api/tenants/acme/smtp-config/"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(
    auth_service: AuthServiceStub, http: aiohttp.ClientSession, clock: FakeClock
) -> AuthServiceClient:
    return AuthServiceClient(auth_service.url, http, cache_ttl_seconds=60.0, clock=clock)


async def test_smtp_config_is_parsed(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    config = await client.smtp_config("acme")
    assert config == SmtpConfig(
        host="smtp.acme.test",
        port=587,
        username="mailer",
        password="s3cret-Pa55",
        use_tls=False,
        start_tls=True,
        from_email="jobs@acme.test",
        from_name="Acme Jobs",
    )
    assert auth_service.requests == [SMTP_PATH]


async def test_password_is_not_in_repr(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    config = await client.smtp_config("acme")
    assert "s3cret-Pa55" not in repr(config)
    assert "s3cret-Pa55" not in str(config)
    assert "mailer" in repr(config)


async def test_blank_optional_fields_become_none(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = {
        **SMTP,
        "username": "",
        "password": "",
        "from_name": None,
    }
    config = await client.smtp_config("acme")
    assert (config.username, config.password, config.from_name) == (None, None, None)


async def test_email_template_is_parsed_with_and_without_text(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.templates[("acme", "welcome")] = {
        "subject": "Hi {{ Candidate Name }}",
        "html": "<p>Hello {{ Candidate Name }}</p>",
    }
    auth_service.templates[("acme", "offer")] = {
        "subject": "Offer",
        "html": "<p>Offer</p>",
        "text": "Offer",
    }
    assert await client.email_template("acme", "welcome") == EmailTemplate(
        subject="Hi {{ Candidate Name }}", html="<p>Hello {{ Candidate Name }}</p>", text=None
    )
    assert await client.email_template("acme", "offer") == EmailTemplate(
        subject="Offer", html="<p>Offer</p>", text="Offer"
    )
    assert auth_service.requests == [
        "/api/tenants/acme/email-templates/welcome/",
        "/api/tenants/acme/email-templates/offer/",
    ]


async def test_answers_are_cached_until_the_ttl_passes(
    auth_service: AuthServiceStub, client: AuthServiceClient, clock: FakeClock
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    auth_service.templates[("acme", "welcome")] = {"subject": "s", "html": "h"}
    await client.smtp_config("acme")
    await client.email_template("acme", "welcome")
    assert len(auth_service.requests) == 2

    clock.now += 59
    auth_service.smtp_configs["acme"] = {**SMTP, "port": 2525}
    assert (await client.smtp_config("acme")).port == 587
    await client.email_template("acme", "welcome")
    assert len(auth_service.requests) == 2

    clock.now += 2
    assert (await client.smtp_config("acme")).port == 2525
    await client.email_template("acme", "welcome")
    assert len(auth_service.requests) == 4


async def test_not_found_is_not_configured_and_cached(
    auth_service: AuthServiceStub, client: AuthServiceClient, clock: FakeClock
) -> None:
    with pytest.raises(NotConfigured, match="acme"):
        await client.smtp_config("acme")
    with pytest.raises(NotConfigured, match="nope"):
        await client.email_template("acme", "nope")
    assert len(auth_service.requests) == 2

    # Configured meanwhile, but the 404 stands until the TTL passes.
    auth_service.smtp_configs["acme"] = SMTP
    with pytest.raises(NotConfigured):
        await client.smtp_config("acme")
    assert len(auth_service.requests) == 2

    clock.now += 61
    assert (await client.smtp_config("acme")).host == "smtp.acme.test"
    assert len(auth_service.requests) == 3


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_transient_status_is_unavailable_and_not_cached(
    auth_service: AuthServiceStub, client: AuthServiceClient, status: int
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    auth_service.failing_status = status
    with pytest.raises(AuthServiceUnavailable, match=str(status)):
        await client.smtp_config("acme")
    with pytest.raises(AuthServiceUnavailable):
        await client.email_template("acme", "welcome")

    auth_service.failing_status = None
    assert (await client.smtp_config("acme")).port == 587
    assert len(auth_service.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 410])
async def test_other_client_errors_are_permanent(
    auth_service: AuthServiceStub, client: AuthServiceClient, status: int
) -> None:
    auth_service.failing_status = status
    with pytest.raises(AuthServiceError, match=str(status)):
        await client.smtp_config("acme")


async def test_connection_refused_is_unavailable(http: aiohttp.ClientSession) -> None:
    client = AuthServiceClient(f"http://127.0.0.1:{free_port()}", http)
    with pytest.raises(AuthServiceUnavailable, match="unreachable"):
        await client.smtp_config("acme")
    with pytest.raises(AuthServiceUnavailable):
        await client.email_template("acme", "welcome")


async def test_timeout_is_unavailable(http: aiohttp.ClientSession) -> None:
    # A server that accepts the connection and never answers.
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = AuthServiceClient(f"http://127.0.0.1:{port}", http, timeout_seconds=0.3)
        with pytest.raises(AuthServiceUnavailable, match="Timeout"):
            await client.smtp_config("acme")
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({**SMTP, "port": 0}, "port"),
        ({**SMTP, "port": 70000}, "port"),
        ({**SMTP, "port": "smtp"}, "port"),
        ({k: v for k, v in SMTP.items() if k != "host"}, "host"),
        ({k: v for k, v in SMTP.items() if k != "use_tls"}, "use_tls"),
        ({**SMTP, "use_tls": True, "start_tls": True}, "use_tls"),
        ({**SMTP, "from_email": "not-an-address"}, "from_email"),
        ({**SMTP, "from_name": "Acme\r\nBcc: victim@x.test"}, "from_name"),
        (["not", "an", "object"], "body"),
    ],
)
async def test_bad_smtp_shape_is_a_permanent_error(
    auth_service: AuthServiceStub, client: AuthServiceClient, body: Any, complaint: str
) -> None:
    auth_service.smtp_configs["acme"] = body
    with pytest.raises(AuthServiceError, match=complaint) as caught:
        await client.smtp_config("acme")
    assert "s3cret-Pa55" not in str(caught.value)


async def test_bad_shape_error_never_quotes_the_password(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    # A password of the wrong type: pydantic would quote it in its own message.
    auth_service.smtp_configs["acme"] = {**SMTP, "password": {"value": "s3cret-Pa55"}}
    with pytest.raises(AuthServiceError, match="password") as caught:
        await client.smtp_config("acme")
    assert "s3cret-Pa55" not in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [{"subject": "s"}, {"html": "h"}, {"subject": "s", "html": 3}, {"subject": None, "html": "h"}],
)
async def test_bad_template_shape_is_a_permanent_error(
    auth_service: AuthServiceStub, client: AuthServiceClient, body: dict[str, Any]
) -> None:
    auth_service.templates[("acme", "welcome")] = body
    with pytest.raises(AuthServiceError, match="welcome"):
        await client.email_template("acme", "welcome")


async def test_invalid_json_is_a_permanent_error(http: aiohttp.ClientSession) -> None:
    async def broken(_request: web.Request) -> web.Response:
        return web.Response(text="{not json", content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/tenants/{tenant}/smtp-config/", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        client = AuthServiceClient(f"http://127.0.0.1:{runner.addresses[0][1]}", http)
        with pytest.raises(AuthServiceError, match="invalid JSON"):
            await client.smtp_config("acme")
    finally:
        await runner.cleanup()


async def test_concurrent_calls_share_one_fetch(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    auth_service.templates[("acme", "welcome")] = {"subject": "s", "html": "h"}
    configs = await asyncio.gather(*(client.smtp_config("acme") for _ in range(200)))
    templates = await asyncio.gather(
        *(client.email_template("acme", "welcome") for _ in range(200))
    )
    assert {c.host for c in configs} == {"smtp.acme.test"}
    assert {t.html for t in templates} == {"h"}
    assert sorted(auth_service.requests) == [
        "/api/tenants/acme/email-templates/welcome/",
        SMTP_PATH,
    ]


async def test_concurrent_failures_are_shared_and_not_cached(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    auth_service.failing_status = 503
    results = await asyncio.gather(
        *(client.smtp_config("acme") for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, AuthServiceUnavailable) for r in results)
    assert len(auth_service.requests) == 1

    auth_service.failing_status = None
    assert (await client.smtp_config("acme")).port == 587
    assert len(auth_service.requests) == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    first = asyncio.create_task(client.smtp_config("acme"))
    second = asyncio.create_task(client.smtp_config("acme"))
    await asyncio.sleep(0)  # both are now waiting on the same fetch
    first.cancel()
    assert (await second).port == 587
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(auth_service.requests) == 1


async def test_tenants_and_keys_are_cached_separately(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    auth_service.smtp_configs["globex"] = {**SMTP, "host": "smtp.globex.test"}
    auth_service.templates[("acme", "a")] = {"subject": "A", "html": "a"}
    auth_service.templates[("globex", "a")] = {"subject": "GA", "html": "ga"}
    assert (await client.smtp_config("acme")).host == "smtp.acme.test"
    assert (await client.smtp_config("globex")).host == "smtp.globex.test"
    assert (await client.email_template("acme", "a")).subject == "A"
    assert (await client.email_template("globex", "a")).subject == "GA"
    with pytest.raises(NotConfigured):
        await client.email_template("acme", "b")


async def test_odd_characters_in_ids_are_quoted(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    tenant, key = "acme/eu 1?x=#", "offer letter/v2%"
    auth_service.smtp_configs[tenant] = SMTP
    auth_service.templates[(tenant, key)] = {"subject": "s", "html": "odd"}
    assert (await client.smtp_config(tenant)).port == 587
    assert (await client.email_template(tenant, key)).html == "odd"
    # Nothing else was asked for: the ids stayed single path segments.
    assert len(auth_service.requests) == 2


@pytest.mark.parametrize("key", ["", ".", ".."])
async def test_dot_segments_are_never_requested(
    auth_service: AuthServiceStub, client: AuthServiceClient, key: str
) -> None:
    with pytest.raises(NotConfigured):
        await client.email_template("acme", key)
    with pytest.raises(NotConfigured):
        await client.smtp_config(key)
    assert auth_service.requests == []


async def test_invalidate_one_tenant_or_all(
    auth_service: AuthServiceStub, client: AuthServiceClient
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    auth_service.smtp_configs["globex"] = SMTP
    auth_service.templates[("acme", "a")] = {"subject": "A", "html": "a"}
    for _ in range(2):
        await client.smtp_config("acme")
        await client.smtp_config("globex")
        await client.email_template("acme", "a")
    assert len(auth_service.requests) == 3

    client.invalidate("acme")
    await client.smtp_config("acme")
    await client.smtp_config("globex")
    await client.email_template("acme", "a")
    assert len(auth_service.requests) == 5

    client.invalidate()
    await client.smtp_config("globex")
    assert len(auth_service.requests) == 6


async def test_zero_ttl_disables_the_cache(
    auth_service: AuthServiceStub, http: aiohttp.ClientSession
) -> None:
    auth_service.smtp_configs["acme"] = SMTP
    client = AuthServiceClient(auth_service.url, http, cache_ttl_seconds=0)
    await client.smtp_config("acme")
    await client.smtp_config("acme")
    assert len(auth_service.requests) == 2
