"""One-click unsubscribe (RFC 8058): the headers of a real categorised email captured by the
SMTP test server, its link's page and POST, forged, altered and rotated tokens, and the
email task's own check of the recipient's preferences."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from hub.errors import InvalidInput
from hub.keys import EMAILS
from hub.services import emails
from hub.services.unsubscribe import Target, link, sign, verify
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub, ServeStarter, SettingsFactory
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink, smtp_config

PUBLIC_URL = "https://notify.example.test"
TEMPLATE = {"subject": "Deal {{ Deal }}", "html": "<p>{{ Deal }} was won.</p>"}


def test_tokens_verify_only_unaltered_with_the_signing_key() -> None:
    key = b"k" * 32
    target = Target("acme", "alice", "deals")
    token = sign(key, target)
    assert verify(key, token) == target
    payload, mac = token.split(".")
    forged_payload = sign(b"other-key-0123456789-0123456789-", Target("acme", "bob", "deals"))
    altered = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        payload + "." + mac[:-4],
        forged_payload.split(".")[0] + "." + mac,  # bob's payload, alice's signature
        forged_payload,  # signed with another key
        token + ".x",
        "",
        "x" * 5000,
        "%%%.%%%",
    ]
    for bad in altered:
        with pytest.raises(InvalidInput):
            verify(key, bad)
    with pytest.raises(InvalidInput):
        verify(b"rotated-" * 4, token)
    with pytest.raises(InvalidInput):
        verify(None, token)  # no usable key: nothing verifies
    assert link("https://h.example", token) == f"https://h.example/api/unsubscribe/?token={token}"


def test_key_derives_from_the_jwt_secret_unless_set() -> None:
    base = Settings(_env_file=None, jwt_secret="a" * 40)  # type: ignore[call-arg]
    assert base.unsubscribe_key is not None
    assert base.unsubscribe_key != b"a" * 40  # a key of its own, not the JWT secret
    assert Settings(_env_file=None, jwt_secret="b" * 40).unsubscribe_key != base.unsubscribe_key  # type: ignore[call-arg]
    explicit = Settings(_env_file=None, jwt_secret="a" * 40, unsubscribe_secret="s" * 40)  # type: ignore[call-arg]
    assert explicit.unsubscribe_key == b"s" * 40
    production = Settings(
        _env_file=None, env="production", jwt_algorithms="RS256", jwt_public_key="k"
    )  # type: ignore[call-arg]
    assert production.unsubscribe_key is None  # the built-in JWT secret is public


@pytest.fixture
def mail_hub(
    hub_factory: Callable[..., Any],
    email_settings: Callable[..., Settings],
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant: str,
) -> Callable[..., Any]:
    """A hub that sends email in its own process (no Redis), through ``smtp_server``."""
    auth_service.smtp_configs[tenant] = smtp_config(smtp_server, "crm@t.example", "CRM")
    auth_service.templates[(tenant, "deal_won")] = TEMPLATE

    async def start(**overrides: Any) -> RunningHub:
        settings = email_settings(redis_url=None, public_url=PUBLIC_URL, **overrides)
        hub: RunningHub = await hub_factory(settings)
        return hub

    return start


async def publish(hub: RunningHub, tenant: str, event_id: str, category: str | None) -> None:
    notification: dict[str, Any] = {"title": "Deal won", "body": "ACME"}
    if category is not None:
        notification["category"] = category
    status, body = await ApiClient.for_service(hub.url, tenant).post(
        "/api/events/",
        {
            "event_id": event_id,
            "tenant_id": tenant,
            "type": "deal.won",
            "recipients": [{"user_id": "alice", "email": "alice@example.com"}],
            "notification": notification,
            "email": {"template_key": "deal_won", "context": {"Deal": event_id}},
        },
    )
    assert status == 202, body


def on_hub(hub: RunningHub, url: str) -> str:
    """The link as the test reaches it: the hub's own address instead of its public one."""
    assert url.startswith(PUBLIC_URL + "/api/unsubscribe/?token=")
    return hub.url + url.removeprefix(PUBLIC_URL)


async def test_unsubscribe_round_trip_through_a_real_email(
    mail_hub: Callable[..., Any], smtp_server: SmtpSink, tenant: str
) -> None:
    hub = await mail_hub()
    await publish(hub, tenant, "deal-1", "deals")
    await publish(hub, tenant, "deal-2", None)  # no category: no unsubscribe link
    await eventually(lambda: len(smtp_server.messages) == 2, timeout=15)
    by_subject = {str(message["Subject"]): message for message in smtp_server.messages}
    mail = by_subject["Deal deal-1"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (url,) = re.fullmatch(r"<([^<>]+)>", str(mail["List-Unsubscribe"])).groups()  # type: ignore[union-attr]
    assert "List-Unsubscribe" not in by_subject["Deal deal-2"]
    assert "List-Unsubscribe-Post" not in by_subject["Deal deal-2"]

    async with aiohttp.ClientSession() as http:
        # GET only shows the page (mail scanners fetch links): nothing changes yet.
        async with http.get(on_hub(hub, url)) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            page = await response.text()
        assert "<strong>deals</strong>" in page and 'method="post"' in page
        (action,) = re.findall(r'action="([^"]+)"', page)
        alice = ApiClient.for_user(hub.url, tenant, "alice")
        assert (await alice.get("/api/preferences/"))[1]["categories"] == {}

        # The one-click POST of RFC 8058, as a mail provider sends it, with no bearer token.
        async with http.post(
            on_hub(hub, url),
            data="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as response:
            assert response.status == 200
            assert await response.json() == {"unsubscribed": True, "category": "deals"}
        # The page's button posts to the same link; a browser gets a page back.
        assert urlsplit(action).query == urlsplit(url).query
        async with http.post(
            hub.url + action.replace("&amp;", "&"), headers={"Accept": "text/html"}
        ) as response:
            assert response.status == 200
            assert "You are unsubscribed" in await response.text()

        # Altered: 400 with the error envelope, and nothing changes.
        tampered = on_hub(hub, url)[:-2] + ("AA" if not url.endswith("AA") else "BB")
        async with http.post(tampered) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "validation_error"
        async with http.get(hub.url + "/api/unsubscribe/") as response:
            assert response.status == 400

    _, preferences = await alice.get("/api/preferences/")
    assert preferences["categories"] == {"deals": {"email": False}}
    assert preferences["channels"]["email"] is True


async def test_a_rotated_secret_invalidates_old_links(
    mail_hub: Callable[..., Any],
    smtp_server: SmtpSink,
    tenant: str,
    hub_settings: SettingsFactory,
    serve_process: ServeStarter,
) -> None:
    hub = await mail_hub(unsubscribe_secret="first-secret-0123456789-0123456789")
    await publish(hub, tenant, "deal-1", "deals")
    await eventually(lambda: len(smtp_server.messages) == 1, timeout=15)
    (url,) = re.findall(r"<([^<>]+)>", str(smtp_server.messages[0]["List-Unsubscribe"]))
    rotated = await serve_process(
        hub_settings(unsubscribe_secret="second-secret-0123456789-0123456789")
    )
    path = url.removeprefix(PUBLIC_URL)
    async with aiohttp.ClientSession() as http:
        for method in ("GET", "POST"):
            async with http.request(method, rotated.url + path) as response:
                assert response.status == 400
                assert (await response.json())["error"]["code"] == "validation_error"
        async with http.post(on_hub(hub, url)) as response:
            assert response.status == 200


async def test_the_email_task_checks_preferences_again_before_sending(
    mail_hub: Callable[..., Any], smtp_server: SmtpSink, tenant: str
) -> None:
    """An email queued before the recipient turned email off for its category is not sent."""
    hub = await mail_hub()
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    await alice.request(
        "PATCH", "/api/preferences/", json={"categories": {"deals": {"email": False}}}
    )

    async def queue(category: str) -> str:
        return await hub.app[EMAILS].send(
            emails.EmailRequest(
                tenant_id=tenant,
                to_email="alice@example.com",
                subject=None,
                template_key="deal_won",
                context={"Deal": category},
                user_id="alice",
                category=category,
            )
        )

    held = await queue("deals")
    sent = await queue("tasks")
    service = ApiClient.for_service(hub.url, tenant)

    async def status_of(email_id: str) -> dict[str, Any]:
        body: dict[str, Any] = (await service.get(f"/api/emails/{email_id}/"))[1]
        return body

    await eventually(lambda: _final(status_of(sent)), timeout=15)
    await eventually(lambda: _final(status_of(held)), timeout=15)
    assert (await status_of(sent))["status"] == "sent"
    refused = await status_of(held)
    assert refused["status"] == "failed"
    assert "turned email off for category 'deals'" in refused["last_error"]
    assert [str(message["Subject"]) for message in smtp_server.messages] == ["Deal tasks"]


async def _final(status: Any) -> bool:
    return (await status)["status"] in ("sent", "failed")
