"""Scheduled work survives kill -9 of every process: a few hundred items (notification and
email each) due within the next seconds, the hub and both workers killed while they come
due, everything restarted; each item is stored once and has one email, sent (counted by
the notifications, the email records and ``Message-ID`` at the SMTP server)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import make_engine, make_session_factory
from db.models import Email, Notification, ScheduledEvent
from hub.settings import Settings
from tasks.smtp import stable_message_id
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import ServeStarter
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink, smtp_config
from tests.harness.worker import WorkerStarter

ITEMS = 300
SENDER = "a@t.example"


@pytest.fixture
async def sessions(postgres_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(postgres_url)
    try:
        yield make_session_factory(engine)
    finally:
        await engine.dispose()


async def count(sessions: async_sessionmaker[AsyncSession], query: object) -> int:
    async with sessions() as session:
        return int(await session.scalar(query) or 0)  # type: ignore[call-overload]


async def test_kill_9_of_every_process_delivers_each_item_once(
    serve_process: ServeStarter,
    worker_process: WorkerStarter,
    email_settings: Callable[..., Settings],
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    sessions: async_sessionmaker[AsyncSession],
    tenant: str,
) -> None:
    auth_service.smtp_configs[tenant] = smtp_config(smtp_server, SENDER, "T")
    auth_service.templates[(tenant, "note")] = {"subject": "{{ n }}", "html": "<p>{{ n }}</p>"}
    settings = email_settings(
        scheduler_batch=25, scheduler_interval_seconds=0.1, email_sweep_interval_seconds=0.2
    )
    hub = await serve_process(settings)
    workers = [await worker_process(settings), await worker_process(settings)]
    service = ApiClient.for_service(hub.url, tenant)
    start = datetime.now(UTC) + timedelta(seconds=6)

    async def post(number: int) -> None:
        due = start + timedelta(seconds=3 * number / ITEMS)  # over three seconds
        event = {
            "event_id": f"e-{number}",
            "tenant_id": tenant,
            "type": "deal.updated",
            "recipients": [{"user_id": f"u-{number % 13}", "email": "ann@example.com"}],
            "notification": {"title": f"n-{number}", "body": ""},
            "email": {"template_key": "note", "context": {"n": f"n-{number}"}},
            "send_at": due.isoformat(),
        }
        for _ in range(5):  # a loaded machine may answer 503: sending again is safe
            status, _ = await service.post("/api/events/", event)
            if status != 503:
                break
            await asyncio.sleep(0.2)
        assert status == 202

    for first in range(0, ITEMS, 10):
        await asyncio.gather(*(post(n) for n in range(first, first + 10)))
    # Kill everything while the items come due.
    await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 1.2)
    for process in (hub.process, *workers):
        process.send_signal(signal.SIGKILL)
    for process in (hub.process, *workers):
        await asyncio.to_thread(process.wait)
    stored_at_kill = await count(
        sessions,
        select(func.count()).select_from(Notification).where(Notification.tenant_id == tenant),
    )
    pending_at_kill = await count(
        sessions,
        select(func.count())
        .select_from(ScheduledEvent)
        .where(ScheduledEvent.tenant_id == tenant, ScheduledEvent.status == "pending"),
    )
    assert stored_at_kill + pending_at_kill == ITEMS
    assert pending_at_kill > 0  # the kill came before the schedule was done
    async with sessions() as session:
        in_flight = {
            stable_message_id(email_id, sender=SENDER)
            for email_id in (
                await session.execute(
                    select(Email.id).where(Email.tenant_id == tenant, Email.status == "sending")
                )
            ).scalars()
        }
    await serve_process(settings)
    await worker_process(settings)
    await worker_process(settings)

    async def all_mailed() -> bool:
        return len(smtp_server.messages) >= ITEMS

    await eventually(all_mailed, timeout=90, interval=0.25)
    await asyncio.sleep(2.0)  # a second apply or send would land by now
    async with sessions() as session:
        titles = Counter(
            (
                await session.execute(
                    select(Notification.title).where(Notification.tenant_id == tenant)
                )
            ).scalars()
        )
        statuses = Counter(
            (await session.execute(select(Email.status).where(Email.tenant_id == tenant))).scalars()
        )
    assert titles == Counter(f"n-{n}" for n in range(ITEMS))
    assert statuses == {"sent": ITEMS}
    # Every email reached the server. A message the server took in the instant before its
    # worker was killed (taken, not yet recorded) goes again with the same Message-ID,
    # which receivers drop (README, "Scaling out"): the email pipeline's one known window,
    # open only for what was being sent at the kill.
    received = Counter(smtp_server.message_ids())
    assert len(received) == ITEMS
    assert {mid for mid, n in received.items() if n > 1} <= in_flight
    assert set(m["Subject"] for m in smtp_server.messages) == {f"n-{n}" for n in range(ITEMS)}
