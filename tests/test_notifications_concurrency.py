"""Per-user seq has no duplicate and no hole when separate processes create at once."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from db.engine import make_engine, make_session_factory
from hub.delivery.bus import LocalBus
from hub.rules import NewNotification, NotificationLimits
from hub.services.notifications import NotificationService
from tests.harness.services import _asyncpg_dsn


async def test_concurrent_creators_on_separate_pools_keep_seq_gapless(postgres_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    # Two engines = two connection pools, like two processes; each runs 20 creators at once.
    engines = [make_engine(postgres_url, pool_size=10) for _ in range(2)]
    factories = [make_session_factory(engine) for engine in engines]
    services = [
        NotificationService(sessions=sessions, bus=LocalBus(), limits=NotificationLimits())
        for sessions in factories
    ]
    users = ["shared-1", "shared-2", "shared-3"]

    async def creator(index: int) -> None:
        service = services[index % 2]
        for round_ in range(5):
            # Overlapping recipient sets, in different orders, contend for the same rows.
            recipients = users[index % 3 :] + users[: index % 3]
            await service.create(
                tenant_id=tenant,
                user_ids=recipients,
                notification=NewNotification(title=f"{index}-{round_}", body=""),
            )

    try:
        await asyncio.gather(*(creator(i) for i in range(40)))
    finally:
        for engine in engines:
            await engine.dispose()

    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        for user in users:
            seqs = [
                row["seq"]
                for row in await connection.fetch(
                    "SELECT seq FROM notifications WHERE tenant_id = $1 AND user_id = $2 ORDER BY seq",
                    tenant,
                    user,
                )
            ]
            assert seqs == list(range(1, 201)), f"{user}: holes or duplicates"
            counter = await connection.fetchrow(
                "SELECT last_seq, unread_count FROM notification_counters"
                " WHERE tenant_id = $1 AND user_id = $2",
                tenant,
                user,
            )
            assert (counter["last_seq"], counter["unread_count"]) == (200, 200)
    finally:
        await connection.close()


async def test_concurrent_marks_and_creates_keep_unread_exact(postgres_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    engine = make_engine(postgres_url, pool_size=10)
    service = NotificationService(
        sessions=make_session_factory(engine), bus=LocalBus(), limits=NotificationLimits()
    )
    try:
        created: list[str] = []

        async def create(n: int) -> None:
            for i in range(n):
                result = await service.create(
                    tenant_id=tenant,
                    user_ids=["u"],
                    notification=NewNotification(title=str(i), body=""),
                )
                created.extend(result.ids)

        async def mark() -> None:
            for _ in range(30):
                await service.mark_read(tenant_id=tenant, user_id="u", ids=list(created))
                await asyncio.sleep(0)

        await asyncio.gather(create(40), create(40), mark(), mark())
        await service.mark_read(tenant_id=tenant, user_id="u", ids=created[:10])
        connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
        try:
            truly_unread = await connection.fetchval(
                "SELECT count(*) FROM notifications WHERE tenant_id = $1 AND read_at IS NULL",
                tenant,
            )
        finally:
            await connection.close()
        assert (await service.counts(tenant_id=tenant, user_id="u")).unread == truly_unread
    finally:
        await engine.dispose()
