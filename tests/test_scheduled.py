"""Scheduled sends (``send_at``) and cancelling them: nothing is visible, emitted or mailed
before the time; then once, through the same applier as every event; cancel wins only
before the apply."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from db.models import Notification, ScheduledEvent
from hub.app import event_applier
from hub.intake.apply import EventApplier
from hub.keys import DB_SESSIONS
from hub.realtime import NOTIFICATIONS_NAMESPACE
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory, SioConnect
from tests.harness.ports import eventually
from tests.harness.tokens import hs256_token


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def event(tenant: str, event_id: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": event_id,
        "tenant_id": tenant,
        "type": "deal.updated",
        "recipients": [{"user_id": "alice"}],
        "notification": {"title": "Deal moved", "body": "to stage 3"},
    }
    document.update(changes)
    return document


async def stored(hub: RunningHub, tenant: str) -> int:
    async with hub.app[DB_SESSIONS]() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Notification)
                .where(Notification.tenant_id == tenant)
            )
            or 0
        )


def schedule_of(hub: RunningHub) -> EventApplier:
    """An applier on the hub's own services, as the scheduler of a worker builds one."""
    return event_applier(hub.app, "schedule")


async def test_scheduled_event_waits_then_applies_once(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    client = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    service = ApiClient.for_service(hub.url, tenant)
    status, body = await service.post("/api/events/", event(tenant, "later", send_at=at(1.5)))
    assert (status, body) == (202, {"event_id": "later", "duplicate": False})
    # A copy is a no-op, scheduled or not.
    assert (await service.post("/api/events/", event(tenant, "later", send_at=at(1.5))))[1][
        "duplicate"
    ]
    applier = schedule_of(hub)
    assert (await applier.apply_due(100)).events == 0  # not due yet
    assert await stored(hub, tenant) == 0
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    assert (await alice.get("/api/notifications/"))[1]["items"] == []
    await asyncio.sleep(1.6)
    outcome = await applier.apply_due(100)
    assert outcome.events == 1
    assert 0 <= outcome.lateness[0] < 5
    (live,) = await client.wait_for("notification:new")
    assert live["title"] == "Deal moved"
    assert (await applier.apply_due(100)).events == 0  # applied once
    assert await stored(hub, tenant) == 1


async def test_send_at_in_the_past_is_delivered_now(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    status, _ = await service.post("/api/events/", event(tenant, "past", send_at=at(-60)))
    assert status == 202
    assert await stored(hub, tenant) == 1  # no scheduler involved
    status, body = await service.post(
        "/api/notifications/", {"user_ids": ["bob"], "title": "Hi", "body": "", "send_at": at(-1)}
    )
    assert status == 201 and len(body["ids"]) == 1


async def test_rest_create_with_send_at_is_scheduled(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    request = {
        "user_ids": ["alice", "bob", "alice"],
        "title": "Reminder",
        "body": "standup",
        "send_at": at(1.0),
        "idempotency_key": "standup-1",
    }
    status, first = await service.post("/api/notifications/", request)
    assert status == 202, first
    assert first["duplicate"] is False and first["send_at"].endswith("Z")
    status, again = await service.post("/api/notifications/", request)
    assert (status, again["event_id"], again["duplicate"]) == (202, first["event_id"], True)
    assert await stored(hub, tenant) == 0
    await asyncio.sleep(1.1)
    assert (await schedule_of(hub).apply_due(100)).events == 1
    assert await stored(hub, tenant) == 2
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    (item,) = (await bob.get("/api/notifications/"))[1]["items"]
    assert (item["title"], item["body"]) == ("Reminder", "standup")


async def test_cancel(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    await service.post("/api/events/", event(tenant, "c-1", send_at=at(0.5)))
    await service.post("/api/events/", event(tenant, "c-2", send_at=at(0.5)))
    await service.post("/api/events/", event(tenant, "now"))
    status, scheduled = await service.post(
        "/api/notifications/", {"user_ids": ["bob"], "title": "x", "body": "", "send_at": at(0.5)}
    )
    assert status == 202
    cancel = "/api/events/{}/cancel/".format
    assert await service.post(cancel("c-1"), {}) == (200, {"cancelled": True})
    assert await service.post(cancel("c-1"), {}) == (200, {"cancelled": True})
    assert (await service.post(cancel(scheduled["event_id"]), {}))[0] == 200
    # Another tenant's, or a user's, cancel reaches nothing.
    other = ApiClient.for_service(hub.url, f"{tenant}-other")
    assert (await other.post(cancel("c-2"), {}))[0] == 404
    user = ApiClient.for_user(hub.url, tenant, "alice")
    assert (await user.post(cancel("c-2"), {}))[0] == 403
    assert (await service.post(cancel("unknown"), {}))[0] == 404
    status, body = await service.post(cancel("now"), {})  # applied at once
    assert (status, body["error"]["code"]) == (409, "already_sent")
    await asyncio.sleep(0.6)
    assert (await schedule_of(hub).apply_due(100)).events == 1  # c-2 only
    status, body = await service.post(cancel("c-2"), {})
    assert (status, body["error"]["code"]) == (409, "already_sent")
    assert await stored(hub, tenant) == 2  # "now" and c-2
    # A cancelled event's id stays taken: a copy is a no-op.
    assert (await service.post("/api/events/", event(tenant, "c-1")))[1]["duplicate"]
    assert await stored(hub, tenant) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"send_at": "2026-12-01T10:00:00"},  # no offset
        {"send_at": "tomorrow"},
        {"digest": {"key": "deals", "window_seconds": 0}},
        {"digest": {"key": "deals", "window_seconds": 7 * 24 * 3600 + 1}},
        {"digest": {"key": "", "window_seconds": 60}},
        {"digest": {"window_seconds": 60}},
    ],
)
async def test_bad_schedules_are_refused(
    hub: RunningHub, tenant: str, change: dict[str, Any]
) -> None:
    status, body = await ApiClient.for_service(hub.url, tenant).post(
        "/api/events/", event(tenant, "bad", **change)
    )
    assert status == 400, body


async def test_bad_rest_schedules_are_refused(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    base = {"user_ids": ["bob"], "title": "x", "body": ""}
    for change, code in (
        ({"send_at": "2026-12-01T10:00:00"}, 400),
        ({"send_at": at(60), "title": " "}, 400),
        ({"send_at": at(60), "title": "t" * 201}, 413),
        ({"send_at": at(60), "expires_at": at(30)}, 400),  # expires before it is sent
    ):
        status, body = await service.post("/api/notifications/", {**base, **change})
        assert status == code, (change, body)
    async with hub.app[DB_SESSIONS]() as session:
        assert not await session.scalar(
            select(func.count())
            .select_from(ScheduledEvent)
            .where(ScheduledEvent.tenant_id == tenant)
        )


async def test_two_worker_schedulers_apply_each_item_once(
    hub_factory: Callable[[Settings], Awaitable[RunningHub]],
    hub_settings: SettingsFactory,
    worker_process: Callable[[Settings], Awaitable[Any]],
    tenant: str,
) -> None:
    """Two ``notifyhub worker`` processes, 300 items due within the same second: each is
    stored once, none is lost."""
    settings = hub_settings(scheduler_batch=20, scheduler_interval_seconds=0.05)
    hub = await hub_factory(settings)
    service = ApiClient.for_service(hub.url, tenant)
    due = at(3.0)
    for start in range(0, 300, 50):
        batch = [
            event(tenant, f"e-{i}", recipients=[{"user_id": f"u-{i % 7}"}], send_at=due)
            for i in range(start, start + 50)
        ]
        await asyncio.gather(*(service.post("/api/events/", item) for item in batch))
    await worker_process(settings)
    await worker_process(settings)

    async def all_stored() -> bool:
        return await stored(hub, tenant) >= 300

    await eventually(all_stored, timeout=30, interval=0.2)
    await asyncio.sleep(1.0)  # a second apply would land by now
    assert await stored(hub, tenant) == 300
    async with hub.app[DB_SESSIONS]() as session:
        seqs = (
            await session.execute(
                select(Notification.user_id, func.count(), func.max(Notification.seq))
                .where(Notification.tenant_id == tenant)
                .group_by(Notification.user_id)
            )
        ).all()
    # Per user, seqs 1..n without a hole or a duplicate.
    assert all(count == top for _, count, top in seqs)
