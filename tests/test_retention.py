"""Retention: the purge deletes expired and old notifications (and old chat messages) in
batches, keeps every count exact, counts what it purged; tenants set shorter periods."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_to_head
from db.models import ConversationMember, Message, Notification, NotificationCounter
from hub.delivery.bus import LocalBus
from hub.rules import NewNotification, NotificationLimits
from hub.services.inbox import Action
from hub.services.notifications import NotificationService
from hub.services.retention import Purge, PurgePolicy
from hub.services.tenants import TenantPolicy, TenantSettingsService
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub
from tests.harness.processes import clean_environment, run_cli
from tests.harness.services import _asyncpg_dsn
from tests.harness.worker import WorkerStarter


@pytest.fixture(params=["postgresql", "sqlite"])
async def sessions(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = postgres_url
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
        await asyncio.to_thread(upgrade_to_head, url)  # Alembic runs a loop of its own
    engine = make_engine(url, pool_size=5)
    yield make_session_factory(engine)
    await engine.dispose()


def purged(kind: str) -> float:
    return REGISTRY.get_sample_value("notifyhub_purged_rows_total", {"kind": kind}) or 0.0


async def truth(
    sessions: async_sessionmaker[AsyncSession], tenant: str, user: str
) -> tuple[int, int]:
    """Unread and unseen by scanning the rows: what the counters must say."""
    n = Notification
    now = datetime.now(UTC)
    live = and_(
        n.tenant_id == tenant,
        n.user_id == user,
        n.archived_at.is_(None),
        or_(n.expires_at.is_(None), n.expires_at > now),
    )
    async with sessions() as session:
        unread = await session.scalar(select(func.count()).where(live, n.read_at.is_(None)))
        unseen = await session.scalar(select(func.count()).where(live, n.seen_at.is_(None)))
    return int(unread or 0), int(unseen or 0)


async def test_purge_deletes_expired_and_old_in_batches_and_keeps_counts_exact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    service = NotificationService(sessions=sessions, bus=LocalBus(), limits=NotificationLimits())
    users = ["u1", "u2", "u3"]
    ids: list[str] = []
    for i in range(12):
        ids += (
            await service.create(
                tenant_id=tenant, user_ids=users, notification=NewNotification(f"n{i}", "")
            )
        ).ids
    # Every state among the doomed rows: read, seen, archived, untouched.
    await service.mark_read(tenant_id=tenant, user_id="u1", ids=ids[0:9])
    await service.change(tenant_id=tenant, user_id="u2", action=Action.SEEN, ids=ids[0:18])
    await service.change(tenant_id=tenant, user_id="u1", action=Action.ARCHIVE, ids=ids[0:6])
    await service.change(tenant_id=tenant, user_id="u3", action=Action.ARCHIVE, ids=ids[0:3])
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        n = Notification
        mine = n.tenant_id == tenant
        expired = [int(i) for i in ids[0:12]]
        old = [int(i) for i in ids[12:21]]
        await session.execute(
            update(n).where(mine, n.id.in_(expired)).values(expires_at=now - timedelta(hours=1))
        )
        await session.execute(
            update(n).where(mine, n.id.in_(old)).values(created_at=now - timedelta(days=400))
        )
    # Expired rows already left the counts, before any purge.
    before = {user: await service.counts(tenant_id=tenant, user_id=user) for user in users}
    for user in users:
        assert (before[user].unread, before[user].unseen) == await truth(sessions, tenant, user)
    expired_before, retention_before = (
        purged("notifications_expired"),
        purged("notifications_retention"),
    )

    report = await Purge(sessions, PurgePolicy(retention_days=365, batch_rows=4)).run()

    assert report.expired >= 12 and report.retained >= 9 and report.batches >= 6
    assert purged("notifications_expired") - expired_before >= 12
    assert purged("notifications_retention") - retention_before >= 9
    async with sessions() as session:
        left = await session.scalars(
            select(Notification.id).where(Notification.tenant_id == tenant)
        )
        assert sorted(left) == sorted(int(i) for i in ids[21:])
        counters = {
            row.user_id: (row.unread_count, row.unseen_count)
            for row in await session.scalars(
                select(NotificationCounter).where(NotificationCounter.tenant_id == tenant)
            )
        }
    for user in users:
        current = await service.counts(tenant_id=tenant, user_id=user)
        assert (current.unread, current.unseen) == await truth(sessions, tenant, user), user
        # Nothing expired is left, so the raw counter is the count itself.
        assert counters[user] == (current.unread, current.unseen), user
    # A second pass finds nothing of this tenant.
    after = await service.counts(tenant_id=tenant, user_id="u2")
    await Purge(sessions, PurgePolicy(retention_days=365, batch_rows=4)).run()
    assert (await service.counts(tenant_id=tenant, user_id="u2")) == after


async def test_tenant_retention_is_shorter_only_for_that_tenant(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    short, default = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    service = NotificationService(sessions=sessions, bus=LocalBus(), limits=NotificationLimits())
    tenants = TenantSettingsService(sessions=sessions, max_retention_days=365)
    await tenants.put(tenant_id=short, settings=TenantPolicy(retention_days=30))
    for tenant in (short, default):
        for title in ("old", "new"):
            await service.create(
                tenant_id=tenant, user_ids=["u"], notification=NewNotification(title, "")
            )
    async with sessions() as session, session.begin():
        await session.execute(
            update(Notification)
            .where(Notification.title == "old", Notification.tenant_id.in_([short, default]))
            .values(created_at=datetime.now(UTC) - timedelta(days=40))
        )
    await Purge(sessions, PurgePolicy(retention_days=365)).run()
    for tenant, titles in ((short, ["new"]), (default, ["new", "old"])):
        page = await service.page(tenant_id=tenant, user_id="u")
        assert [item["title"] for item in page.items] == titles
        assert page.counts.unread == len(titles)


async def test_tenant_settings_over_rest(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    path = "/api/tenant/settings/"
    nothing = {
        "retention_days": None,
        "chat_retention_days": None,
        "chat_edit_window_seconds": None,
    }
    assert await service.get(path) == (200, nothing)
    body = {"retention_days": 90, "chat_retention_days": 7, "chat_edit_window_seconds": 900}
    assert await service.request("PUT", path, json=body) == (200, body)
    assert await service.get(path) == (200, body)
    assert await service.request("PUT", path, json={"chat_retention_days": 3}) == (
        200,
        nothing | {"chat_retention_days": 3},
    )
    for bad in (
        {"chat_edit_window_seconds": 0},
        {"retention_days": 366},
        {"retention_days": 0},
        {"retention_days": -1},
        {"retention_days": "ten"},
        {"chat_retention_days": 0},
        {"unknown": 1},
    ):
        status, reply = await service.request("PUT", path, json=bad)
        assert status == 400, bad
        assert reply["error"]["code"] == "validation_error", reply
    user = ApiClient.for_user(hub.url, tenant, "alice")
    assert (await user.get(path))[0] == 403
    assert (await user.request("PUT", path, json=body))[0] == 403
    other = ApiClient.for_service(hub.url, f"{tenant}-other")
    assert (await other.get(path))[1]["chat_retention_days"] is None


async def test_chat_retention_purges_old_messages_and_keeps_unread_exact(
    hub: RunningHub, tenant: str, postgres_url: str
) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    sent = []
    for i in range(5):
        status, reply = await alice.post(
            "/api/messages/send/", {"to_user_id": "bob", "body": f"m{i}"}
        )
        assert status == 201
        sent.append(reply["message"])
    conversation = sent[0]["conversation_id"]
    await bob.post(f"/api/conversations/{conversation}/read/", {"message_id": sent[1]["id"]})
    await ApiClient.for_service(hub.url, tenant).request(
        "PUT", "/api/tenant/settings/", json={"chat_retention_days": 5}
    )
    engine = make_engine(postgres_url, pool_size=2)
    sessions = make_session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            await session.execute(
                update(Message)
                .where(
                    Message.tenant_id == tenant, Message.id.in_([int(m["id"]) for m in sent[:3]])
                )
                .values(created_at=datetime.now(UTC) - timedelta(days=6))
            )
        before = purged("messages")
        await Purge(sessions, PurgePolicy(retention_days=365, batch_rows=2)).run()
        assert purged("messages") - before >= 3
        async with sessions() as session:
            unread = dict(
                (
                    await session.execute(
                        select(ConversationMember.user_id, ConversationMember.unread_count).where(
                            ConversationMember.tenant_id == tenant
                        )
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    status, page = await bob.get(f"/api/conversations/{conversation}/messages/")
    assert [m["body"] for m in page["items"]] == ["m4", "m3"]
    # Bob had read m0 and m1; m2 (unread) was purged: m3 and m4 are left unread.
    assert unread == {"alice": 0, "bob": 2}
    status, listing = await bob.get("/api/conversations/")
    assert listing["items"][0]["unread_count"] == 2


def test_purge_command_runs_once_and_reports(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    upgrade_to_head(url)
    result = run_cli("purge", env=clean_environment(NOTIFYHUB_DATABASE_URL=url))
    assert result.returncode == 0, result.stderr
    assert "purged 0 expired and 0 old notifications, 0 chat messages" in result.stdout


def test_purge_command_without_a_database_is_one_line() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/none"
    result = run_cli("purge", env=clean_environment(NOTIFYHUB_DATABASE_URL=url))
    assert result.returncode == 2, result.stderr
    assert "notifyhub purge: the database does not answer" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_worker_purges_on_its_schedule(
    hub: RunningHub,
    tenant: str,
    worker_process: WorkerStarter,
    email_settings: Callable[..., Settings],
    postgres_url: str,
) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    await service.notify(["alice"], title="short-lived", ttl_seconds=1)
    (kept,) = await service.notify(["alice"], title="kept")
    await worker_process(email_settings(purge_interval_seconds=0.3))
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        async with asyncio.timeout(20):
            while True:
                rows = await connection.fetch(
                    "SELECT id FROM notifications WHERE tenant_id = $1", tenant
                )
                if [str(row["id"]) for row in rows] == [kept]:
                    break
                await asyncio.sleep(0.1)
        counter = await connection.fetchrow(
            "SELECT unread_count, unseen_count FROM notification_counters"
            " WHERE tenant_id = $1 AND user_id = 'alice'",
            tenant,
        )
    finally:
        await connection.close()
    assert (counter["unread_count"], counter["unseen_count"]) == (1, 1)
