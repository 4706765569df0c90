"""Every stored notification reaches every connected socket of its user within 5 s, even
when its bus message is lost: Redis away when it was published, or the node that stored it
dead between commit and publish. No client reconnects; none gets anything twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from db.engine import make_engine, make_session_factory
from hub.rules import NewNotification
from hub.services.notifications import store_notifications
from tests.harness.api import ApiClient
from tests.harness.hub import (
    RecordingClient,
    RunningHub,
    ServeStarter,
    SettingsFactory,
    SioConnect,
)
from tests.harness.services import PrivateRedis
from tests.harness.tokens import hs256_token

HubFactory = Callable[..., Awaitable[RunningHub]]
PROMISE_SECONDS = 5.0


async def all_receive(clients: list[RecordingClient], titles: list[str]) -> float:
    """Seconds until every client holds exactly ``titles`` as notification:new, in order."""
    started = time.monotonic()
    for client in clients:
        received = await client.wait_for("notification:new", len(titles), timeout=PROMISE_SECONDS)
        assert [item["title"] for item in received] == titles
    await asyncio.sleep(0.3)  # nothing more (a duplicate) arrives
    for client in clients:
        assert [item["title"] for item in client.received("notification:new")] == titles
    return time.monotonic() - started


@dataclass
class HubOnPrivateRedis:
    hub: RunningHub
    redis: PrivateRedis


@pytest.fixture
async def on_private_redis(
    hub_factory: HubFactory, hub_settings: SettingsFactory, private_redis: PrivateRedis
) -> HubOnPrivateRedis:
    """A hub whose Redis the test may kill and start again."""
    hub = await hub_factory(hub_settings(redis_url=private_redis.url))
    return HubOnPrivateRedis(hub, private_redis)


async def test_created_during_a_redis_outage_reaches_sockets_that_never_reconnect(
    on_private_redis: HubOnPrivateRedis, sio_connect: SioConnect, tenant: str
) -> None:
    hub, private_redis = on_private_redis.hub, on_private_redis.redis
    service = ApiClient.for_service(hub.url, tenant)
    await service.notify(["u1"], title="before")  # so a live-only client has a past to skip
    token = hs256_token(tenant=tenant, user="u1")
    live_only = [await sio_connect(hub.url, "/notifications", token=token) for _ in range(3)]
    resuming = await sio_connect(hub.url, "/notifications", auth={"token": token, "last_seq": 1})
    private_redis.kill()
    await service.notify(["u1"], title="during")  # 201: stored, its bus message is lost
    await all_receive([*live_only, resuming], ["during"])
    await private_redis.start()
    await service.notify(["u1"], title="after")
    await all_receive([*live_only, resuming], ["during", "after"])


async def test_stored_by_a_node_that_died_before_publishing_reaches_the_other_nodes(
    serve_process: ServeStarter,
    hub_settings: SettingsFactory,
    sio_connect: SioConnect,
    postgres_url: str,
    tenant: str,
) -> None:
    settings = hub_settings()
    node_a, node_b = await serve_process(settings), await serve_process(settings)
    clients = [
        await sio_connect(
            node.url, "/notifications", token=hs256_token(tenant=tenant, user=f"u{i % 5}")
        )
        for i, node in enumerate([node_a, node_b] * 10)
    ]
    # What a node killed right after its commit leaves behind: rows nobody published.
    engine = make_engine(postgres_url)
    try:
        async with make_session_factory(engine)() as session, session.begin():
            await store_notifications(
                session,
                [(tenant, f"u{i}", NewNotification(title="orphan", body="b")) for i in range(5)],
            )
    finally:
        await engine.dispose()
    took = await all_receive(clients, ["orphan"])
    assert took < PROMISE_SECONDS
    # Live delivery goes on in order afterwards.
    await ApiClient.for_service(node_a.url, tenant).notify([f"u{i}" for i in range(5)], "next")
    await all_receive(clients, ["orphan", "next"])


async def test_redis_killed_and_restarted_under_traffic_loses_and_doubles_nothing(
    on_private_redis: HubOnPrivateRedis, sio_connect: SioConnect, tenant: str
) -> None:
    hub, private_redis = on_private_redis.hub, on_private_redis.redis
    users = [f"u{i}" for i in range(4)]
    clients = [
        await sio_connect(hub.url, "/notifications", token=hs256_token(tenant=tenant, user=user))
        for user in users
        for _ in range(2)  # two devices each
    ]
    service = ApiClient.for_service(hub.url, tenant)
    rounds = 120

    async def produce() -> None:
        for i in range(rounds):
            await service.notify(users, title=f"n{i}")  # 201 every time, Redis or not
            await asyncio.sleep(0.02)

    producing = asyncio.create_task(produce())
    await asyncio.sleep(0.6)
    private_redis.kill()
    await asyncio.sleep(1.0)
    await private_redis.start()
    await producing
    await all_receive(clients, [f"n{i}" for i in range(rounds)])
