"""Digests: events of one (tenant, user, key) within ``window_seconds`` of the first make
one in-app notification, updated in place (``notification:updated`` with
``changes.data``), and one email when the window closes, whose template context gains
``digest_count`` and ``digest_items``; a window outlives a killed worker."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from db.models import DigestWindow, Email, Notification
from hub.app import event_applier
from hub.keys import DB_SESSIONS
from hub.realtime import NOTIFICATIONS_NAMESPACE
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink, smtp_config
from tests.harness.tokens import hs256_token
from tests.harness.worker import WorkerStarter

TEMPLATE = {
    "subject": "{{ digest_count }} deal updates",
    "html": "<ul>{% for item in digest_items %}<li>{{ item.title }}</li>{% endfor %}</ul>",
}


def digest_event(
    tenant: str, number: int, *, window: int = 60, key: str = "deals", **changes: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": f"d-{key}-{number}",
        "tenant_id": tenant,
        "type": "deal.updated",
        "recipients": [{"user_id": "ann", "email": "ann@example.com"}],
        "notification": {
            "title": f"Deal {number} moved",
            "body": "",
            "category": "deals",
            "data": {"deal": number},
        },
        "email": {"template_key": "digest", "context": {"who": "Ann"}},
        "digest": {"key": key, "window_seconds": window},
    }
    document.update(changes)
    return document


async def notifications_of(hub: RunningHub, tenant: str) -> list[Any]:
    async with hub.app[DB_SESSIONS]() as session:
        return list(
            (
                await session.execute(
                    select(Notification.id, Notification.title, Notification.data)
                    .where(Notification.tenant_id == tenant)
                    .order_by(Notification.id)
                )
            ).all()
        )


async def emails_of(hub: RunningHub, tenant: str) -> list[Any]:
    async with hub.app[DB_SESSIONS]() as session:
        return list(
            (
                await session.execute(
                    select(Email.id, Email.status, Email.context).where(Email.tenant_id == tenant)
                )
            ).all()
        )


async def test_events_of_a_window_update_one_notification_in_place(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    client = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="ann")
    )
    service = ApiClient.for_service(hub.url, tenant)
    for number in (1, 2, 3):
        assert (await service.post("/api/events/", digest_event(tenant, number)))[0] == 202
    # A copy of an event is not gathered twice.
    assert (await service.post("/api/events/", digest_event(tenant, 3)))[1]["duplicate"]
    # Another key is another digest.
    await service.post("/api/events/", digest_event(tenant, 1, key="tasks"))
    news = await client.wait_for("notification:new", 2)
    first = next(n for n in news if n["data"]["digest"]["key"] == "deals")
    assert first["title"] == "Deal 1 moved"
    assert first["data"]["digest"]["count"] == 1
    updates = await client.wait_for("notification:updated", 2)
    for update, count in zip(updates, (2, 3), strict=True):
        assert update["ids"] == [first["id"]]
        digest = update["changes"]["data"]["digest"]
        assert digest["count"] == count
        assert update["unread_count"] == 1
    items = updates[-1]["changes"]["data"]["digest"]["events"]
    assert [item["title"] for item in items] == ["Deal 3 moved", "Deal 2 moved", "Deal 1 moved"]
    assert items[0]["event_id"] == "d-deals-3" and items[0]["data"] == {"deal": 3}
    stored = await notifications_of(hub, tenant)
    assert len(stored) == 2  # one per key
    deals = next(row for row in stored if row.data["digest"]["key"] == "deals")
    assert deals.data["deal"] == 1  # the first event's own data stays
    assert deals.data["digest"] == updates[-1]["changes"]["data"]["digest"]
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    listed = (await ann.get("/api/notifications/"))[1]
    assert listed["unread_count"] == 2
    assert await emails_of(hub, tenant) == []  # the window is still open


async def test_a_digest_keeps_the_newest_fifty(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    # One batch of 30 over REST one by one, then 30 more: 60 events, one notification.
    for number in range(60):
        await service.post("/api/events/", digest_event(tenant, number))
    (row,) = await notifications_of(hub, tenant)
    digest = row.data["digest"]
    assert digest["count"] == 60
    assert len(digest["events"]) == 50
    assert digest["events"][0]["title"] == "Deal 59 moved"
    assert digest["events"][-1]["title"] == "Deal 10 moved"


async def test_window_closes_with_one_email_and_the_next_event_opens_another(
    hub: RunningHub, tenant: str
) -> None:
    """Closing without any worker: by the scheduler's pass, or by the next event of the
    key when that comes first."""
    service = ApiClient.for_service(hub.url, tenant)
    for number in (1, 2):
        await service.post("/api/events/", digest_event(tenant, number, window=1))
    await asyncio.sleep(1.2)
    # The window's time is up but no scheduler closed it: the next event does.
    await service.post("/api/events/", digest_event(tenant, 3, window=1))
    (mail,) = await emails_of(hub, tenant)
    assert mail.context["digest_count"] == 2
    assert [item["title"] for item in mail.context["digest_items"]] == [
        "Deal 2 moved",
        "Deal 1 moved",
    ]
    assert mail.context["who"] == "Ann"
    notifications = await notifications_of(hub, tenant)
    assert [n.data["digest"]["count"] for n in notifications] == [2, 1]
    await asyncio.sleep(1.2)
    applier = event_applier(hub.app, "schedule")
    assert (await applier.apply_due(100)).windows == 1
    assert (await applier.apply_due(100)).windows == 0  # closed once
    mails = await emails_of(hub, tenant)
    assert sorted(m.context["digest_count"] for m in mails) == [1, 2]
    async with hub.app[DB_SESSIONS]() as session:
        (window,) = (
            await session.execute(select(DigestWindow).where(DigestWindow.tenant_id == tenant))
        ).scalars()
        assert window.status == "closed"


async def test_in_app_off_still_mails_the_digest(hub: RunningHub, tenant: str) -> None:
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    status, _ = await ann.request(
        "PATCH", "/api/preferences/", json={"categories": {"deals": {"in_app": False}}}
    )
    assert status == 200
    service = ApiClient.for_service(hub.url, tenant)
    for number in (1, 2):
        await service.post("/api/events/", digest_event(tenant, number, window=1))
    assert await notifications_of(hub, tenant) == []
    await asyncio.sleep(1.2)
    assert (await event_applier(hub.app, "schedule").apply_due(100)).windows == 1
    (mail,) = await emails_of(hub, tenant)
    assert mail.context["digest_count"] == 2


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
async def test_a_window_spanning_a_worker_restart_closes_once(
    hub_factory: Callable[[Settings], Awaitable[RunningHub]],
    email_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tenant: str,
    kill: signal.Signals,
) -> None:
    auth_service.smtp_configs[tenant] = smtp_config(smtp_server, "a@t.example", "T")
    auth_service.templates[(tenant, "digest")] = TEMPLATE
    settings = email_settings(scheduler_interval_seconds=0.1)
    hub = await hub_factory(settings)
    worker = await worker_process(settings)
    service = ApiClient.for_service(hub.url, tenant)
    for number in (1, 2):
        await service.post("/api/events/", digest_event(tenant, number, window=3))
    await asyncio.sleep(1.0)
    worker.send_signal(kill)
    await asyncio.to_thread(worker.wait)
    await service.post("/api/events/", digest_event(tenant, 3, window=3))
    await asyncio.sleep(2.5)  # the window's end passes with no worker at all
    assert smtp_server.messages == []
    await worker_process(settings)
    await worker_process(settings)  # two schedulers compete for the closing

    async def mailed() -> bool:
        return len(smtp_server.messages) >= 1

    await eventually(mailed, timeout=30, interval=0.1)
    await asyncio.sleep(1.5)
    (message,) = smtp_server.messages
    assert message["Subject"] == "3 deal updates"
    assert Counter(m.status for m in await emails_of(hub, tenant)) == {"sent": 1}
    async with hub.app[DB_SESSIONS]() as session:
        assert (
            await session.scalar(
                select(func.count())
                .select_from(DigestWindow)
                .where(DigestWindow.tenant_id == tenant, DigestWindow.status == "open")
            )
        ) == 0
