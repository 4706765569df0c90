"""Quiet hours hold email, not in-app: an event's email to a user inside their quiet
window (in their time zone) waits, due at the window's end; the notification is shown at
once. Real worker process, SMTP sink, PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update

from db.models import Email
from hub.intake.apply import email_id_for
from hub.intake.envelope import EventEnvelope
from hub.keys import DB_SESSIONS
from hub.quiet_hours import quiet_until
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink, smtp_config
from tests.harness.worker import WorkerStarter

TEMPLATE = {"subject": "Deal {{ deal }}", "html": "<p>{{ deal }} moved</p>"}


async def email_row(hub: RunningHub, email_id: str) -> Any:
    async with hub.app[DB_SESSIONS]() as session:
        return (
            await session.execute(
                select(Email.status, Email.next_attempt_at, Email.last_error).where(
                    Email.id == email_id
                )
            )
        ).one_or_none()


async def test_email_waits_out_quiet_hours_in_app_does_not(
    hub_factory: Callable[[Settings], Awaitable[RunningHub]],
    email_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant: str,
) -> None:
    auth_service.smtp_configs[tenant] = smtp_config(smtp_server, "a@t.example", "T")
    auth_service.templates[(tenant, "deal")] = TEMPLATE
    settings = email_settings(email_sweep_interval_seconds=0.2)
    hub = await hub_factory(settings)
    await worker_process(settings)
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    zone = "America/New_York"
    local = datetime.now(ZoneInfo(zone))
    quiet = {
        "start": (local - timedelta(hours=1)).strftime("%H:%M"),
        "end": (local + timedelta(hours=2)).strftime("%H:%M"),
        "timezone": zone,
    }
    assert (await ann.request("PATCH", "/api/preferences/", json={"quiet_hours": quiet}))[0] == 200
    document = {
        "event_id": "quiet-1",
        "tenant_id": tenant,
        "type": "deal.moved",
        "recipients": [{"user_id": "ann", "email": "ann@example.com"}],
        "notification": {"title": "Deal moved", "body": ""},
        "email": {"template_key": "deal", "context": {"deal": "ACME"}},
    }
    assert (await ApiClient.for_service(hub.url, tenant).post("/api/events/", document))[0] == 202
    # In-app at once.
    assert [n["title"] for n in (await ann.get("/api/notifications/"))[1]["items"]] == [
        "Deal moved"
    ]
    email_id = email_id_for(EventEnvelope.model_validate(document), "ann")

    async def held() -> Any:
        row = await email_row(hub, email_id)
        return row if row is not None and row.status == "retrying" else None

    await eventually(held, timeout=20, interval=0.1)
    row = await held()
    assert row.last_error == "waiting out the user's quiet hours"
    expected = quiet_until(quiet, datetime.now(UTC))  # type: ignore[arg-type]
    assert expected is not None
    assert abs((row.next_attempt_at - expected).total_seconds()) < 1
    assert smtp_server.messages == []
    # The window ends (here: the user drops it, and the clock is moved to its end).
    assert (await ann.request("PATCH", "/api/preferences/", json={"quiet_hours": None}))[0] == 200
    async with hub.app[DB_SESSIONS]() as session, session.begin():
        await session.execute(
            update(Email).where(Email.id == email_id).values(next_attempt_at=datetime.now(UTC))
        )

    async def sent() -> bool:
        found = await email_row(hub, email_id)
        return found is not None and found.status == "sent"

    await eventually(sent, timeout=20, interval=0.1)
    assert len(smtp_server.messages) == 1
