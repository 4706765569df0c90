"""The embedded profile (SQLite, in-process tasks, one process) schedules too: send_at,
cancel, digests with their email, and a kill -9 of the one process with items due."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from db.engine import make_engine, make_session_factory
from db.models import Notification
from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import ServeStarter, SettingsFactory, SioConnect
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink, smtp_config
from tests.harness.tokens import hs256_token


def at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def event(tenant: str, event_id: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": event_id,
        "tenant_id": tenant,
        "type": "deal.updated",
        "recipients": [{"user_id": "ann", "email": "ann@example.com"}],
        "notification": {"title": event_id, "body": ""},
    }
    document.update(changes)
    return document


async def test_scheduling_and_digests_in_one_process(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    sio_connect: SioConnect,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tmp_path: Path,
) -> None:
    tenant = "t-embedded"
    auth_service.smtp_configs[tenant] = smtp_config(smtp_server, "a@t.example", "T")
    auth_service.templates[(tenant, "digest")] = {
        "subject": "{{ digest_count }} updates",
        "html": "{% for item in digest_items %}{{ item.title }} {% endfor %}",
    }
    hub = await hub_factory(
        hub_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            redis_url=None,
            auto_migrate=True,
            auth_service_url=auth_service.url,
            scheduler_interval_seconds=0.1,
        )
    )
    live = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="ann")
    )
    service = ApiClient.for_service(hub.url, tenant)
    await service.post("/api/events/", event(tenant, "later", send_at=at(1.0)))
    await service.post("/api/events/", event(tenant, "never", send_at=at(1.0)))
    assert (await service.post("/api/events/never/cancel/", {}))[0] == 200
    status, scheduled = await service.post(
        "/api/notifications/",
        {"user_ids": ["ann"], "title": "rest-later", "body": "", "send_at": at(1.0)},
    )
    assert status == 202
    await asyncio.sleep(0.5)
    assert live.received("notification:new") == []
    news = await live.wait_for("notification:new", 2, timeout=10)
    assert sorted(n["title"] for n in news) == ["later", "rest-later"]
    assert (await service.post(f"/api/events/{scheduled['event_id']}/cancel/", {}))[0] == 409

    email = {"template_key": "digest", "context": {}}
    for number in (1, 2):
        await service.post(
            "/api/events/",
            event(
                tenant,
                f"deal-{number}",
                email=email,
                digest={"key": "deals", "window_seconds": 1},
            ),
        )
    (update,) = await live.wait_for("notification:updated", 1)
    assert update["changes"]["data"]["digest"]["count"] == 2

    async def mailed() -> bool:
        return len(smtp_server.messages) == 1

    await eventually(mailed, timeout=20, interval=0.1)
    assert smtp_server.messages[0]["Subject"] == "2 updates"
    await asyncio.sleep(0.5)
    assert len(live.received("notification:new")) == 3  # never, the cancelled one, is not


async def test_kill_9_of_the_embedded_process_delivers_each_item_once(
    serve_process: ServeStarter, hub_settings: SettingsFactory, tmp_path: Path
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    settings = hub_settings(
        database_url=database, redis_url=None, auto_migrate=True, scheduler_batch=10
    )
    running = await serve_process(settings)
    tenant = "t-kill"
    service = ApiClient.for_service(running.url, tenant)
    count = 150
    for number in range(count):
        # Spread over the next ~2 seconds: some applied before the kill, some after.
        due = at(1.0 + number / 75)
        await service.post("/api/events/", event(tenant, f"e-{number}", send_at=due))
    await asyncio.sleep(1.8)
    running.process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(running.process.wait)
    engine = make_engine(database)
    sessions = make_session_factory(engine)

    async def stored() -> int:
        async with sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Notification)) or 0)

    before = await stored()
    restarted = await serve_process(settings)

    async def all_stored() -> bool:
        return await stored() >= count

    await eventually(all_stored, timeout=60, interval=0.2)
    await asyncio.sleep(1.0)
    assert await stored() == count
    async with sessions() as session:
        titles = (await session.execute(select(Notification.title))).scalars().all()
    assert sorted(titles) == sorted(f"e-{n}" for n in range(count))
    await engine.dispose()
    assert (await ApiClient.for_service(restarted.url, tenant).post("/api/events/e-0/cancel/", {}))[
        0
    ] == 409
    assert 0 <= before < count  # the kill did land in the middle (or before any)
