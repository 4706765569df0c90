"""Outbound webhooks: endpoints API, Standard Webhooks signatures checked with the library
on the receiving side, retries and give-up, tenant isolation, the private-address guard,
and a slow receiver that must not hold up another tenant's deliveries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from hub.settings import Settings
from hub.webhook_urls import PublicOnlyResolver, RefusedUrl, check_public
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink, smtp_config
from tests.harness.worker import WorkerStarter

HookStack = Callable[..., Awaitable[tuple[RunningHub, Settings]]]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A tenant's HTTP receiver: ``/hook/{name}`` answers ``answers[name]`` in turn (then
    204); ``/slow/{name}`` never answers in time."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)

    def of(self, name: str) -> list[Received]:
        return [r for r in self.received if r.path.endswith(f"/{name}")]

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        queued = self.answers.get(request.match_info["name"])
        return web.Response(status=queued.pop(0) if queued else 204)

    async def slow(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        await asyncio.sleep(30)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{name}", hooks.hook)
    app.router.add_post("/slow/{name}", hooks.slow)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hooks.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield hooks
    finally:
        await runner.cleanup()


@pytest.fixture
def hook_stack(
    hub_factory: Callable[..., Any],
    email_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
) -> HookStack:
    """A hub and a worker that may call receivers on loopback (tests only)."""

    async def start(*, workers: int = 1, **overrides: Any) -> tuple[RunningHub, Settings]:
        values: dict[str, Any] = {
            "webhooks_allow_private": True,
            "webhook_retry_base_seconds": 0.2,
            "webhook_retry_max_seconds": 0.5,
            "webhook_timeout_seconds": 2.0,
            "email_sweep_interval_seconds": 0.1,
            **overrides,
        }
        settings = email_settings(**values)
        hub: RunningHub = await hub_factory(settings)
        for _ in range(workers):
            await worker_process(settings)
        return hub, settings

    return start


async def create_hook(hub: RunningHub, tenant: str, url: str, events: list[str]) -> dict[str, Any]:
    status, body = await ApiClient.for_service(hub.url, tenant).post(
        "/api/webhooks/", {"url": url, "events": events}
    )
    assert status == 201, body
    return dict(body)


async def deliveries(hub: RunningHub, tenant: str, hook_id: str) -> list[dict[str, Any]]:
    status, body = await ApiClient.for_service(hub.url, tenant).get(
        f"/api/webhooks/{hook_id}/deliveries/"
    )
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


# -- endpoints API -----------------------------------------------------------------------------


async def test_webhooks_are_the_tenants_own_and_bad_ones_are_400(
    hub_factory: Callable[..., Any], hub_settings: Callable[..., Settings], tenant: str
) -> None:
    hub: RunningHub = await hub_factory(hub_settings(webhooks_max_per_tenant=2))
    service = ApiClient.for_service(hub.url, tenant)
    created = await create_hook(hub, tenant, "https://crm.example.com/h", ["notification.read"])
    assert created["secret"].startswith("whsec_") and created["events"] == ["notification.read"]
    assert (await service.get("/api/webhooks/"))[1]["items"] == [
        {k: created[k] for k in ("id", "url", "events", "created_at")}
    ]
    for body in (
        {"url": "ftp://crm.example.com/h", "events": ["email.sent"]},
        {"url": "https://crm.example.com/h", "events": ["email.bounced"]},
        {"url": "https://crm.example.com/h", "events": []},
        {"url": "https://user:pw@crm.example.com/h", "events": ["email.sent"]},
        {"url": "not a url", "events": ["email.sent"]},
        # Internal receivers: loopback, private, link-local (metadata services).
        {"url": "http://127.0.0.1:8080/h", "events": ["email.sent"]},
        {"url": "http://localhost/h", "events": ["email.sent"]},
        {"url": "http://10.1.2.3/h", "events": ["email.sent"]},
        {"url": "http://169.254.169.254/latest", "events": ["email.sent"]},
        {"url": "http://[::1]/h", "events": ["email.sent"]},
    ):
        status, answer = await service.post("/api/webhooks/", body)
        assert (status, answer["error"]["code"]) == (400, "validation_error"), body
    await create_hook(hub, tenant, "https://crm.example.com/two", ["email.sent"])
    status, answer = await service.post(
        "/api/webhooks/", {"url": "https://crm.example.com/3", "events": ["email.sent"]}
    )
    assert status == 400 and "at most 2" in answer["error"]["message"]

    other = ApiClient.for_service(hub.url, "other-tenant")
    assert (await other.get("/api/webhooks/"))[1]["items"] == []
    assert (await other.delete(f"/api/webhooks/{created['id']}/"))[0] == 404
    assert (await other.get(f"/api/webhooks/{created['id']}/deliveries/"))[0] == 404
    user = ApiClient.for_user(hub.url, tenant, "ann")
    assert (await user.get("/api/webhooks/"))[0] == 403
    assert (await service.delete(f"/api/webhooks/{created['id']}/"))[0] == 204
    assert len((await service.get("/api/webhooks/"))[1]["items"]) == 1


async def test_the_guard_also_holds_when_connecting() -> None:
    """A name that resolves to an internal address is refused at every connection, not only
    when registered (a DNS answer can change after the check)."""
    with pytest.raises(RefusedUrl, match="non-public"):
        await check_public("http://localhost/hook")
    resolver = PublicOnlyResolver()
    try:
        with pytest.raises(OSError, match="no public address"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


# -- deliveries --------------------------------------------------------------------------------


async def test_a_notification_is_reported_signed_and_listed_with_its_attempt(
    hook_stack: HookStack, receiver: Receiver, tenant: str
) -> None:
    hub, _ = await hook_stack()
    hook = await create_hook(hub, tenant, f"{receiver.url}/hook/crm", ["notification.created"])
    [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(["ann"], title="Hi")

    await eventually(lambda: receiver.of("crm"), timeout=20)
    [request] = receiver.of("crm")
    # The receiver's check, with the library: signature, timestamp and id.
    event = Webhook(hook["secret"]).verify(request.body, request.headers)
    assert event["type"] == "notification.created"
    assert event["data"]["id"] == notification_id and event["data"]["title"] == "Hi"
    assert event["data"]["user_id"] == "ann" and event["timestamp"].endswith("Z")

    async def listed() -> list[dict[str, Any]]:
        return [d for d in await deliveries(hub, tenant, hook["id"]) if d["status"] == "sent"]

    await eventually(listed, timeout=10)
    [delivery] = await listed()
    assert delivery["message_id"] == request.headers["webhook-id"]
    assert [(a["attempt"], a["status_code"]) for a in delivery["attempts"]] == [(1, 204)]


async def test_failures_are_retried_with_the_same_id_then_given_up(
    hook_stack: HookStack, receiver: Receiver, tenant: str
) -> None:
    # The window counts from the event: long enough for a worker that starts slowly.
    hub, _ = await hook_stack(webhook_retry_window_seconds=8.0)
    flaky = await create_hook(hub, tenant, f"{receiver.url}/hook/flaky", ["notification.created"])
    dead = await create_hook(hub, tenant, f"{receiver.url}/hook/dead", ["notification.created"])
    receiver.answers = {"flaky": [500, 503], "dead": [500] * 100}
    await ApiClient.for_service(hub.url, tenant).notify(["ann"])

    async def settled() -> bool:
        statuses = [
            d["status"] for h in (flaky, dead) for d in await deliveries(hub, tenant, h["id"])
        ]
        return statuses == ["sent", "failed"]

    await eventually(settled, timeout=30)
    [sent] = await deliveries(hub, tenant, flaky["id"])
    assert [a["status_code"] for a in sent["attempts"]] == [500, 503, 204]
    assert len({r.headers["webhook-id"] for r in receiver.of("flaky")}) == 1
    [failed] = await deliveries(hub, tenant, dead["id"])
    assert len(failed["attempts"]) >= 2 and all(a["status_code"] == 500 for a in failed["attempts"])


async def test_hooks_never_hear_another_tenants_events(
    hook_stack: HookStack, receiver: Receiver, tenant: str
) -> None:
    hub, _ = await hook_stack()
    await create_hook(hub, tenant, f"{receiver.url}/hook/mine", ["notification.created"])
    await create_hook(hub, "t-other", f"{receiver.url}/hook/theirs", ["notification.created"])
    await ApiClient.for_service(hub.url, tenant).notify(["ann"])
    await ApiClient.for_service(hub.url, "t-other").notify(["bob"])
    await eventually(lambda: receiver.of("mine") and receiver.of("theirs"), timeout=20)
    await asyncio.sleep(0.5)
    mine = [r.body for r in receiver.of("mine")]
    theirs = [r.body for r in receiver.of("theirs")]
    assert len(mine) == len(theirs) == 1
    assert b'"user_id":"ann"' in mine[0] and b'"user_id":"bob"' in theirs[0]


async def test_a_slow_receiver_does_not_hold_up_another_tenants_deliveries(
    hook_stack: HookStack, receiver: Receiver, tenant: str
) -> None:
    """Ten deliveries wait for a receiver that never answers in time; a worker with four
    slots still delivers the other tenant's event at once (at most two slots per endpoint)."""
    hub, _ = await hook_stack(webhook_worker_concurrency=4, webhook_timeout_seconds=8.0)
    await create_hook(hub, tenant, f"{receiver.url}/slow/stuck", ["notification.created"])
    await create_hook(hub, "t-fast", f"{receiver.url}/hook/fast", ["notification.created"])
    slow_tenant = ApiClient.for_service(hub.url, tenant)
    for n in range(10):
        await slow_tenant.notify(["ann"], title=f"n{n}")
    await asyncio.sleep(0.5)  # the stuck deliveries are claimed and hanging
    started = time.monotonic()
    await ApiClient.for_service(hub.url, "t-fast").notify(["bob"])
    await eventually(lambda: receiver.of("fast"), timeout=10)
    # Without the per-endpoint cap it would wait for a stuck request's 8 s timeout.
    assert receiver.of("fast")[0].at - started < 4.0


async def test_email_and_push_outcomes_are_reported(
    hook_stack: HookStack,
    receiver: Receiver,
    tenant: str,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
) -> None:
    """``email.sent``, ``email.failed`` and ``push.failed``, each written with the outcome
    it reports."""
    auth_service.smtp_configs[tenant] = smtp_config(smtp_server, "a@t.example", "T")
    auth_service.templates[(tenant, "hello")] = {"subject": "Hi", "html": "<p>Hi {{name}}</p>"}
    hub, _ = await hook_stack()
    hook = await create_hook(
        hub, tenant, f"{receiver.url}/hook/ops", ["email.sent", "email.failed", "push.failed"]
    )
    service = ApiClient.for_service(hub.url, tenant)
    status, sent = await service.post(
        "/api/emails/send/",
        {"to_email": "ann@example.com", "template_key": "hello", "context": {"name": "Ann"}},
    )
    assert status == 202, sent
    status, failed = await service.post(
        "/api/emails/send/", {"to_email": "bob@example.com", "template_key": "no-such-template"}
    )
    assert status == 202, failed
    # An APNs device on a hub without APNs credentials: its push fails at once.
    await ApiClient.for_user(hub.url, tenant, "ann").post(
        "/api/devices/", {"kind": "apns", "token": "phone"}
    )
    [notification_id] = await service.notify(["ann"])

    def events() -> dict[str, dict[str, Any]]:
        verified = [Webhook(hook["secret"]).verify(r.body, r.headers) for r in receiver.of("ops")]
        return {event["type"]: event["data"] for event in verified}

    await eventually(lambda: len(events()) == 3, timeout=30)
    reported = events()
    assert reported["email.sent"]["id"] == sent["id"]
    assert reported["email.sent"]["to_email"] == "ann@example.com"
    assert reported["email.failed"]["id"] == failed["id"]
    assert reported["email.failed"]["error"]
    assert reported["push.failed"]["notification_id"] == notification_id
    assert reported["push.failed"]["kind"] == "apns"
    assert "NOTIFYHUB_APNS_KEY_FILE" in reported["push.failed"]["error"]


async def test_read_marks_are_reported(
    hook_stack: HookStack, receiver: Receiver, tenant: str
) -> None:
    hub, _ = await hook_stack()
    hook = await create_hook(hub, tenant, f"{receiver.url}/hook/reads", ["notification.read"])
    ids = await ApiClient.for_service(hub.url, tenant).notify(["ann"])
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    status, _ = await ann.post("/api/notifications/mark-as-read/", {"ids": ids})
    assert status == 200
    # Marking them again changes nothing, so it reports nothing.
    await ann.post("/api/notifications/mark-as-read/", {"ids": ids})
    await eventually(lambda: receiver.of("reads"), timeout=20)
    await asyncio.sleep(0.5)
    [request] = receiver.of("reads")
    event = Webhook(hook["secret"]).verify(request.body, request.headers)
    assert event["type"] == "notification.read"
    assert event["data"] == {"user_id": "ann", "ids": ids, "unread_count": 0}


async def test_chat_messages_are_reported(
    hook_stack: HookStack, receiver: Receiver, tenant: str
) -> None:
    hub, _ = await hook_stack()
    hook = await create_hook(hub, tenant, f"{receiver.url}/hook/chat", ["message.created"])
    status, sent = await ApiClient.for_user(hub.url, tenant, "ann").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "hello"}
    )
    assert status == 201, sent
    await eventually(lambda: receiver.of("chat"), timeout=20)
    [request] = receiver.of("chat")
    event = Webhook(hook["secret"]).verify(request.body, request.headers)
    assert event["type"] == "message.created"
    assert event["data"]["id"] == sent["message"]["id"]
    assert (event["data"]["sender_id"], event["data"]["body"]) == ("ann", "hello")


async def test_a_receiver_that_times_out_is_retried_with_the_same_id_then_given_up(
    hook_stack: HookStack, receiver: Receiver, tenant: str
) -> None:
    """No answer within NOTIFYHUB_WEBHOOK_TIMEOUT_SECONDS is a failed attempt (no status
    code, the error kept), retried with the same ``webhook-id`` until the window ends."""
    # The window counts from the event: long enough for a worker that starts slowly.
    hub, _ = await hook_stack(webhook_timeout_seconds=0.5, webhook_retry_window_seconds=10.0)
    hook = await create_hook(hub, tenant, f"{receiver.url}/slow/late", ["notification.created"])
    await ApiClient.for_service(hub.url, tenant).notify(["ann"])

    async def given_up() -> bool:
        return [d["status"] for d in await deliveries(hub, tenant, hook["id"])] == ["failed"]

    await eventually(given_up, timeout=45)
    [failed] = await deliveries(hub, tenant, hook["id"])
    assert len(failed["attempts"]) >= 2
    assert all(a["status_code"] is None and a["error"] for a in failed["attempts"])
    late = receiver.of("late")
    assert len(late) >= 2 and len({r.headers["webhook-id"] for r in late}) == 1


async def test_a_tenant_cannot_register_ten_thousand_hooks(
    hub_factory: Callable[..., Any], hub_settings: Callable[..., Settings], tenant: str
) -> None:
    """With the default limit (50 per tenant), a flood of registrations at once creates
    exactly 50 and answers 400 to the rest; an endpoint asking for 10,000 event types or
    with a 10,000-character URL is 400 too. Another tenant still registers."""
    # Private receivers allowed: the URLs are checked for shape only (no DNS lookups).
    hub: RunningHub = await hub_factory(hub_settings(webhooks_allow_private=True))
    service = ApiClient.for_service(hub.url, tenant)
    body = {"url": "https://crm.example.com/h", "events": ["email.sent"]}
    semaphore = asyncio.Semaphore(50)

    async def register() -> int:
        async with semaphore:
            return (await service.post("/api/webhooks/", body))[0]

    statuses = await asyncio.gather(*(register() for _ in range(300)))
    assert statuses.count(201) == 50 and statuses.count(400) == 250
    assert len((await service.get("/api/webhooks/"))[1]["items"]) == 50
    for bad in (
        {"url": "https://crm.example.com/h", "events": ["email.sent"] * 10_000},
        {"url": "https://crm.example.com/" + "h" * 10_000, "events": ["email.sent"]},
    ):
        status, answer = await ApiClient.for_service(hub.url, f"{tenant}-2").post(
            "/api/webhooks/", bad
        )
        assert (status, answer["error"]["code"]) == (400, "validation_error")
    assert (await ApiClient.for_service(hub.url, f"{tenant}-2").post("/api/webhooks/", body))[
        0
    ] == 201
