"""Email end to end: REST queue -> Redis stream -> worker process -> tenant SMTP server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub, settings_environment
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink, smtp_config, start_smtp_sink
from tests.harness.worker import WorkerStarter

TEMPLATE = {
    "subject": "Interview for {{ Job Title }}",
    "html": "<p>Hello {{ Candidate Name }},</p><p>See you at {{time}}.</p>",
}


@pytest.fixture
def second_smtp_server() -> Iterator[SmtpSink]:
    sink, controller = start_smtp_sink()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def tenant_mail(auth_service: AuthServiceStub, smtp_server: SmtpSink, tenant: str) -> str:
    """``tenant`` with SMTP settings (the ``smtp_server`` sink) and the interview template."""
    auth_service.smtp_configs[tenant] = smtp_config(smtp_server, "a@t.example", "T")
    auth_service.templates[(tenant, "interview")] = TEMPLATE
    return tenant


MailStack = Callable[..., Awaitable[tuple[RunningHub, Settings]]]


@pytest.fixture
def mail_stack(
    hub_factory: Callable[..., Any],
    email_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
) -> MailStack:
    """Start a hub and one worker process on settings of this test's own."""

    async def start(**overrides: Any) -> tuple[RunningHub, Settings]:
        settings = email_settings(**overrides)
        hub: RunningHub = await hub_factory(settings)
        await worker_process(settings)
        return hub, settings

    return start


async def queue(hub: RunningHub, tenant: str, to: str, **extra: Any) -> str:
    status, body = await ApiClient.for_service(hub.url, tenant).post(
        "/api/emails/send/",
        {
            "to_email": to,
            "template_key": "interview",
            "context": {
                "Candidate Name": "Ada <Lovelace>",
                "Job Title": "Engineer",
                "time": "10:00",
            },
            **extra,
        },
    )
    assert status == 202, body
    email_id: str = body["id"]
    return email_id


async def email_status(hub: RunningHub, tenant: str, email_id: str) -> dict[str, Any]:
    status, body = await ApiClient.for_service(hub.url, tenant).get(f"/api/emails/{email_id}/")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def wait_status(
    hub: RunningHub, tenant: str, email_id: str, wanted: str, timeout: float = 15
) -> dict[str, Any]:
    """Poll until the email has ``wanted`` status (a seed-style task's record appears only
    once a worker has taken it, so 404 means "not yet")."""
    last: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal last
        status, body = await ApiClient.for_service(hub.url, tenant).get(f"/api/emails/{email_id}/")
        assert status in (200, 404), body
        last = body
        return status == 200 and last["status"] == wanted

    await eventually(reached, timeout=timeout, interval=0.1)
    return last


async def test_each_tenant_mails_through_its_own_server(
    mail_stack: MailStack,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    second_smtp_server: SmtpSink,
) -> None:
    tenant_a, tenant_b = f"A-{uuid.uuid4().hex[:6]}", f"B-{uuid.uuid4().hex[:6]}"
    auth_service.smtp_configs[tenant_a] = smtp_config(smtp_server, "hr@a.example", "A Recruiting")
    auth_service.smtp_configs[tenant_b] = smtp_config(
        second_smtp_server, "jobs@b.example", "B Jobs"
    )
    for tenant in (tenant_a, tenant_b):
        auth_service.templates[(tenant, "interview")] = TEMPLATE
    hub, _ = await mail_stack()

    id_a = await queue(hub, tenant_a, "ada@example.com")
    id_b = await queue(hub, tenant_b, "bob@example.com", subject="Custom {{ Job Title }}")
    sent_a = await wait_status(hub, tenant_a, id_a, "sent")
    await wait_status(hub, tenant_b, id_b, "sent")
    assert sent_a["attempts"] == 1 and sent_a["sent_at"] and sent_a["last_error"] is None

    (mail_a,) = smtp_server.messages
    (mail_b,) = second_smtp_server.messages
    assert mail_a["From"] == "A Recruiting <hr@a.example>"
    assert mail_a["To"] == "ada@example.com"
    assert mail_a["Subject"] == "Interview for Engineer"
    html = mail_a.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = mail_a.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hello Ada &lt;Lovelace&gt;," in html
    assert "Hello Ada <Lovelace>," in text and "10:00" in text
    assert mail_b["From"] == "B Jobs <jobs@b.example>"
    assert mail_b["Subject"] == "Custom Engineer"
    assert smtp_server.envelopes == [("hr@a.example", ["ada@example.com"])]


async def test_auth_service_outage_is_retried_until_it_returns(
    mail_stack: MailStack,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant_mail: str,
) -> None:
    tenant = tenant_mail
    auth_service.failing_status = 503
    hub, _ = await mail_stack(email_max_attempts=20)
    email_id = await queue(hub, tenant, "x@example.com")

    async def retried_twice() -> bool:
        return (await email_status(hub, tenant, email_id))["attempts"] >= 2

    await eventually(retried_twice, timeout=15, interval=0.1)
    assert smtp_server.messages == []
    auth_service.failing_status = None
    done = await wait_status(hub, tenant, email_id, "sent")
    statuses = [event["status"] for event in done["history"]]
    assert statuses[0] == "queued" and statuses[-1] == "sent"
    assert statuses.count("retrying") >= 2
    assert len(smtp_server.messages) == 1


async def test_smtp_5xx_fails_and_4xx_retries(
    mail_stack: MailStack,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant_mail: str,
) -> None:
    tenant = tenant_mail
    hub, _ = await mail_stack()

    smtp_server.scripted_replies.append(
        "550 5.1.1 <nobody@example.com>: Recipient address rejected"
    )
    failed_id = await queue(hub, tenant, "nobody@example.com")
    failed = await wait_status(hub, tenant, failed_id, "failed")
    assert "550" in failed["last_error"] and "Recipient address rejected" in failed["last_error"]
    assert failed["attempts"] == 1

    smtp_server.scripted_replies.append("451 4.3.0 try again later")
    retried_id = await queue(hub, tenant, "later@example.com")
    sent = await wait_status(hub, tenant, retried_id, "sent")
    assert sent["attempts"] == 2
    assert [e["status"] for e in sent["history"]] == [
        "queued",
        "sending",
        "retrying",
        "sending",
        "sent",
    ]
    assert "451" in sent["history"][2]["error"]
    assert [m["To"] for m in smtp_server.messages] == ["later@example.com"]


async def test_missing_template_and_missing_key_fail_with_reasons(
    mail_stack: MailStack,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant_mail: str,
) -> None:
    tenant = tenant_mail
    hub, _ = await mail_stack()
    missing_template = await queue(hub, tenant, "a@example.com", template_key="nope")
    _, body = await ApiClient.for_service(hub.url, tenant).post(
        "/api/emails/send/",
        {"to_email": "b@example.com", "template_key": "interview", "context": {"time": "1"}},
    )
    missing_key = body["id"]
    failed = await wait_status(hub, tenant, missing_template, "failed")
    assert "'nope' not found" in failed["last_error"]
    failed = await wait_status(hub, tenant, missing_key, "failed")
    assert "Candidate Name" in failed["last_error"] or "Job Title" in failed["last_error"]
    assert smtp_server.messages == []


async def test_killed_worker_task_is_redelivered_and_sent_once(
    hub_factory: Callable[..., Any],
    email_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant_mail: str,
) -> None:
    tenant = tenant_mail
    auth_service.delay_seconds = 1.0  # the worker sits in the middle of its task
    settings = email_settings()
    hub = await hub_factory(settings)
    victim = await worker_process(settings)
    email_id = await queue(hub, tenant, "once@example.com")
    await eventually(lambda: len(auth_service.requests) > 0, timeout=10)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert (await email_status(hub, tenant, email_id))["status"] == "sending"
    auth_service.delay_seconds = 0.0
    # A new worker reclaims the unacknowledged task once it has been idle long enough.
    await worker_process(settings)
    sent = await wait_status(hub, tenant, email_id, "sent", timeout=20)
    assert sent["attempts"] == 2
    assert [m["To"] for m in smtp_server.messages] == ["once@example.com"]

    # The same task again (a redelivery or a repeated kick): nothing is sent.
    from taskiq.kicker import AsyncKicker

    from tasks.broker import build_broker
    from tasks.email import TASK_NAME

    broker = build_broker(settings)
    await broker.startup()
    try:
        await (
            AsyncKicker(TASK_NAME, broker, {})
            .with_task_id(email_id)
            .kiq(
                tenant_id=tenant,
                to_email="once@example.com",
                subject=None,
                template_key="interview",
                context={},
            )
        )
    finally:
        await broker.shutdown()
    await asyncio.sleep(1.5)
    assert len(smtp_server.messages) == 1
    assert (await email_status(hub, tenant, email_id))["attempts"] == 2


async def test_worker_stops_on_sigterm_within_ten_seconds(
    email_settings: Callable[..., Settings],
) -> None:
    import os

    settings = email_settings(worker_shutdown_seconds=8.0)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        "worker",
        env={**os.environ, **settings_environment(settings)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert worker.stderr is not None
        async with asyncio.timeout(30):  # imports are slow on a busy machine
            while b"worker started" not in await worker.stderr.readline():
                pass
        await asyncio.sleep(1)  # now blocked reading the stream
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await worker.communicate()
        assert time.monotonic() - started < 10
        assert worker.returncode == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


SEED_CALLER = """
import asyncio, sys
from hub.settings import load_settings
from tasks.broker import build_broker
from tasks.email import send_notification_email

async def main():
    broker = build_broker(load_settings())
    await broker.startup()
    task = await send_notification_email.kiq(
        tenant_id=sys.argv[1], to_email="seed@example.com", subject=None,
        template_key="interview", context={"Candidate Name": "Seed", "Job Title": "QA", "time": "9"},
    )
    print(task.task_id)
    await broker.shutdown()

asyncio.run(main())
"""


async def test_seed_style_kiq_from_another_process_is_delivered(
    mail_stack: MailStack, smtp_server: SmtpSink, tenant_mail: str
) -> None:
    import os

    tenant = tenant_mail
    hub, settings = await mail_stack()
    caller = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", SEED_CALLER, tenant],
        env={**os.environ, **settings_environment(settings)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert caller.returncode == 0, caller.stderr
    task_id = caller.stdout.strip().splitlines()[-1]
    sent = await wait_status(hub, tenant, task_id, "sent")
    assert sent["to_email"] == "seed@example.com"
    assert [m["Subject"] for m in smtp_server.messages] == ["Interview for QA"]


async def test_embedded_profile_sends_inside_serve(
    hub_factory: Callable[..., Any],
    email_settings: Callable[..., Settings],
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant: str,
    tmp_path: Any,
) -> None:
    auth_service.templates[(tenant, "interview")] = TEMPLATE
    # No tenant SMTP settings (404): the platform SMTP server is used.
    hub = await hub_factory(
        email_settings(
            redis_url=None,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            auto_migrate=True,
            smtp_host=smtp_server.host,
            smtp_port=smtp_server.port,
            smtp_start_tls=False,
            smtp_from_email="platform@hub.example",
        )
    )
    email_id = await queue(hub, tenant, "embedded@example.com")
    await wait_status(hub, tenant, email_id, "sent")
    (mail,) = smtp_server.messages
    assert mail["From"].endswith("<platform@hub.example>") or mail["From"] == "platform@hub.example"


async def test_email_routes_are_for_services_of_the_tenant(
    hub_factory: Callable[..., Any], email_settings: Callable[..., Settings], tenant: str
) -> None:
    hub = await hub_factory(email_settings())
    service = ApiClient.for_service(hub.url, tenant)
    body = {"to_email": "a@example.com", "template_key": "k", "context": {}}
    status, answer = await service.post("/api/emails/send/", {**body, "tenant_id": "someone-else"})
    assert (status, answer["error"]["code"]) == (403, "forbidden")
    status, answer = await ApiClient.for_user(hub.url, tenant, "u").post("/api/emails/send/", body)
    assert status == 403
    status, answer = await service.post("/api/emails/send/", {"template_key": "k"})
    assert (status, answer["error"]["code"]) == (400, "validation_error")
    status, answer = await service.post("/api/emails/send/", {**body, "tenant_id": tenant})
    assert status == 202
    email_id = answer["id"]
    assert (await service.get(f"/api/emails/{email_id}/"))[0] == 200
    other = ApiClient.for_service(hub.url, tenant + "-other")
    assert (await other.get(f"/api/emails/{email_id}/"))[0] == 404
    assert (await service.get("/api/emails/does-not-exist/"))[0] == 404


async def test_an_events_email_is_listed_with_its_notifications_deliveries(
    mail_stack: MailStack, tenant_mail: str
) -> None:
    hub, _ = await mail_stack()
    service = ApiClient.for_service(hub.url, tenant_mail)
    event = {
        "event_id": f"e-{uuid.uuid4().hex[:8]}",
        "tenant_id": tenant_mail,
        "type": "interview.scheduled",
        "recipients": [
            {"user_id": "ann", "email": "ann@example.com"},
            {"user_id": "bob", "email": "bob@example.com"},
        ],
        "notification": {"title": "Interview", "body": "Tomorrow at 10"},
        "email": {
            "template_key": "interview",
            "context": {"Candidate Name": "Ann", "Job Title": "Engineer", "time": "10:00"},
        },
    }
    assert (await service.post("/api/events/", event))[0] == 202
    ann = ApiClient.for_user(hub.url, tenant_mail, "ann")

    async def anns_deliveries() -> list[dict[str, Any]]:
        _, page = await ann.get("/api/notifications/")
        if not page["items"]:
            return []
        notification_id = page["items"][0]["id"]
        status, body = await ann.get(f"/api/notifications/{notification_id}/deliveries/")
        assert status == 200, body
        items: list[dict[str, Any]] = body["items"]
        return items

    await eventually(lambda: _sent(anns_deliveries()), timeout=20)
    (delivery,) = await anns_deliveries()  # ann's own email only, not bob's
    assert delivery["channel"] == "email" and delivery["target"] == "ann@example.com"
    assert delivery["attempts"] == 1 and delivery["last_error"] is None


async def _sent(deliveries: Awaitable[list[dict[str, Any]]]) -> bool:
    return [d["status"] for d in await deliveries] == ["sent"]
