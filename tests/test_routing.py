"""Routing across ``serve`` processes: each node hears only its own sockets' traffic
(docs/architecture.md "Routing"), and nothing is lost or doubled under churn and kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from hub.presence import LocalPresenceStore, PresenceTracker, UserKey
from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.hub import (
    ConnectRefused,
    RecordingClient,
    ServeProcess,
    ServeStarter,
    SettingsFactory,
    SioConnect,
)
from tests.harness.ports import eventually
from tests.harness.tokens import hs256_token

QUICK = {"presence_grace_seconds": 1.0, "presence_node_ttl_seconds": 2.0}


class ChannelTap:
    """Every message Redis carries on the hub's channels, by channel."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self.messages: list[tuple[str, dict[str, Any]]] = []

    async def run(self, ready: asyncio.Event) -> None:
        async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            # The nodes' own channels, the all-nodes one and python-socketio's manager's.
            await pubsub.psubscribe(f"{self.channel}*")
            ready.set()
            async for message in pubsub.listen():
                if message["type"] == "pmessage":
                    name = message["channel"].decode()
                    with contextlib.suppress(orjson.JSONDecodeError):
                        self.messages.append((name, orjson.loads(message["data"])))

    def kinds_on(self, channel: str) -> list[str]:
        return [m.get("k", "?") for name, m in self.messages if name == channel]


@pytest.fixture
async def tap(redis_url: str, socketio_channel: str) -> AsyncIterator[ChannelTap]:
    redis = Redis.from_url(redis_url)
    tapping = ChannelTap(redis, socketio_channel)
    ready = asyncio.Event()
    task = asyncio.create_task(tapping.run(ready))
    await asyncio.wait_for(ready.wait(), 5)
    yield tapping
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await redis.aclose()


async def node_of(redis_url: str, settings: Settings, tenant: str, user: str, scope: str) -> str:
    """The node id the route map gives ``user`` (exactly one expected)."""
    redis = Redis.from_url(redis_url)
    try:
        key = f"{settings.socketio_channel}:{scope}:user:{len(tenant)}:{tenant}:{user}"
        (node,) = await redis.smembers(key)
        return str(node.decode())
    finally:
        await redis.aclose()


def node_channel(settings: Settings, node: str) -> str:
    return f"{settings.socketio_channel}:node:{node}"


async def three_nodes(settings: Settings, serve_process: ServeStarter) -> list[ServeProcess]:
    return list(await asyncio.gather(*(serve_process(settings) for _ in range(3))))


async def test_each_node_hears_only_its_sockets_and_a_user_on_two_nodes_gets_one_copy_per_socket(
    hub_settings: SettingsFactory,
    serve_process: ServeStarter,
    sio_connect: SioConnect,
    tap: ChannelTap,
    tenant: str,
    redis_url: str,
) -> None:
    settings = hub_settings()
    nodes = await three_nodes(settings, serve_process)
    clients = [
        await sio_connect(
            node.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user=f"u{i}")
        )
        for i, node in enumerate(nodes)
    ]
    # u0 has a second device, on node 1.
    second = await sio_connect(
        nodes[1].url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="u0")
    )
    node_ids = [
        await node_of(redis_url, settings, tenant, f"u{i}", "routes:notifications") for i in (1, 2)
    ]
    service = ApiClient.for_service(nodes[0].url, tenant)
    created = [await service.notify(["u0", "u1", "u2"], title=f"n{k}") for k in range(10)]
    for i, client in enumerate(clients):
        got = await client.wait_for("notification:new", count=10, timeout=10)
        assert [n["id"] for n in got] == [ids[i] for ids in created]
    got = await second.wait_for("notification:new", count=10, timeout=10)
    assert [n["id"] for n in got] == [ids[0] for ids in created]
    await asyncio.sleep(0.3)
    # Once per socket: no duplicate on any of them.
    for client in (*clients, second):
        assert len(client.received("notification:new")) == 10
    # Node 2 heard only u2's notifications, one message per batch.
    on_node_2 = [m for name, m in tap.messages if name == node_channel(settings, node_ids[1])]
    assert [m["k"] for m in on_node_2] == ["new"] * 10
    assert {item[1] for m in on_node_2 for item in m["i"]} == {"u2"}
    on_node_1 = [m for name, m in tap.messages if name == node_channel(settings, node_ids[0])]
    assert {item[1] for m in on_node_1 for item in m["i"]} == {"u0", "u1"}
    # Nothing went on an all-nodes channel (python-socketio's manager's, or the bus's).
    assert tap.kinds_on(settings.socketio_channel) == []
    assert tap.kinds_on(f"{settings.socketio_channel}:notifications") == []
    # A read mark goes to the user's nodes only, a tenant announcement to all nodes.
    await ApiClient.for_user(nodes[2].url, tenant, "u1").post(
        "/api/notifications/mark-as-read/", {"ids": [created[0][1]]}
    )
    await clients[1].wait_for("notification:read")
    await service.post("/api/broadcasts/", {"title": "hello", "body": "all"})
    for client in (*clients, second):
        await client.wait_for("broadcast")
    assert tap.kinds_on(node_channel(settings, node_ids[1])) == ["new"] * 10
    assert tap.kinds_on(f"{settings.socketio_channel}:notifications") == ["bc"]


async def test_chat_events_reach_the_nodes_of_their_users_only(
    hub_settings: SettingsFactory,
    serve_process: ServeStarter,
    sio_connect: SioConnect,
    tap: ChannelTap,
    tenant: str,
    redis_url: str,
) -> None:
    settings = hub_settings(**QUICK)
    nodes = await three_nodes(settings, serve_process)
    alice = await sio_connect(
        nodes[1].url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    bob = await sio_connect(
        nodes[2].url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob")
    )
    # Node 0 holds a /notifications socket only: it must hear no chat event.
    watcher = await sio_connect(
        nodes[0].url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="carol")
    )
    node_0 = await node_of(redis_url, settings, tenant, "carol", "routes:notifications")
    node_2 = await node_of(redis_url, settings, tenant, "bob", "presence:chat")

    status, sent = await ApiClient.for_user(nodes[0].url, tenant, "alice").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "hi bob"}
    )
    assert status == 201, sent
    (new,) = await bob.wait_for("message:new", timeout=10)
    await alice.wait_for("message:new", timeout=10)
    conversation = new["conversation_id"]
    assert (await alice.call("typing", {"conversation_id": conversation, "typing": True}))["ok"]
    (typing,) = await bob.wait_for("typing", timeout=10)
    assert typing["user_id"] == "alice" and typing["typing"] is True
    read = await bob.call(
        "message:read", {"conversation_id": conversation, "message_id": new["id"]}
    )
    assert read["ok"], read
    await alice.wait_for("message:read", timeout=10)
    edit = await alice.call("message:edit", {"message_id": new["id"], "body": "hi Bob"})
    assert edit["ok"], edit
    (updated,) = await bob.wait_for("message:updated", timeout=10)
    assert updated["body"] == "hi Bob"
    await bob.client.disconnect()  # after the grace period, alice hears bob went offline
    await eventually(
        lambda: any(p["status"] == "offline" for p in alice.received("presence")), timeout=10
    )
    assert tap.kinds_on(node_channel(settings, node_0)) == []
    kinds = Counter(tap.kinds_on(node_channel(settings, node_2)))
    assert kinds["msg"] == 1 and kinds["emit"] >= 3  # typing, message:read, message:updated
    assert tap.kinds_on(settings.socketio_channel) == []
    assert watcher.received("message:new") == []


class Follower:
    """One user's view across reconnects: each connection resumes from the last seq."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.ids: list[str] = []
        self.seqs: list[int] = []
        self.client: RecordingClient | None = None
        self._taken = 0

    def absorb(self) -> None:
        if self.client is None:
            return
        got = self.client.received("notification:new")
        for item in got[self._taken :]:
            self.ids.append(item["id"])
            self.seqs.append(item["seq"])
        self._taken = len(got)

    async def connect(self, sio_connect: SioConnect, url: str, tenant: str) -> None:
        self.absorb()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.client.disconnect()
        auth: dict[str, Any] = {"token": hs256_token(tenant=tenant, user=self.user)}
        if self.seqs:
            auth["last_seq"] = self.seqs[-1]
        self.client = await sio_connect(url, NOTIFICATIONS_NAMESPACE, auth=auth)
        self._taken = 0


async def test_kill_9_restart_and_churn_under_traffic_lose_and_double_nothing(
    hub_settings: SettingsFactory,
    serve_process: ServeStarter,
    sio_connect: SioConnect,
    tenant: str,
) -> None:
    settings = hub_settings(**QUICK, delivery_lag_check_seconds=0.5)
    nodes = await three_nodes(settings, serve_process)
    followers = [Follower(f"u{i}") for i in range(6)]
    for i, follower in enumerate(followers):
        await follower.connect(sio_connect, nodes[i % 3].url, tenant)
    users = [f.user for f in followers]
    created: list[list[str]] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        service = ApiClient.for_service(nodes[0].url, tenant)  # node 0 is never killed
        while not stop.is_set():
            created.append(await service.notify(users, title=f"n{len(created)}"))
            await asyncio.sleep(0.03)

    async def churn() -> None:  # u3 and u4 hop between nodes all the time
        rng = random.Random(7)
        while not stop.is_set():
            follower = followers[rng.choice([3, 4])]
            url = rng.choice([nodes[0].url, nodes[2].url])
            with contextlib.suppress(ConnectRefused):
                await follower.connect(sio_connect, url, tenant)
            await asyncio.sleep(rng.uniform(0.05, 0.3))

    sending = asyncio.create_task(traffic())
    churning = asyncio.create_task(churn())
    await asyncio.sleep(1.5)
    nodes[1].process.kill()  # u1 and u4's sockets there die without a goodbye
    await asyncio.to_thread(nodes[1].process.wait)
    await asyncio.sleep(0.5)
    restarted = await serve_process(settings)
    nodes[1] = restarted
    await followers[1].connect(sio_connect, restarted.url, tenant)
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(sending, churning)
    for follower in followers:  # everyone ends on a live node, resuming
        await follower.connect(sio_connect, restarted.url, tenant)
    for index, follower in enumerate(followers):
        expected = [batch[index] for batch in created]

        def caught_up(f: Follower = follower, want: int = len(expected)) -> bool:
            f.absorb()
            return len(f.ids) >= want

        await eventually(caught_up, timeout=20)
        await asyncio.sleep(0.3)
        follower.absorb()
        assert follower.ids == expected, (follower.user, len(follower.ids), len(expected))
        assert follower.seqs == sorted(set(follower.seqs))
    assert len(created) > 30


async def test_push_asks_the_route_map_whether_the_user_is_connected_anywhere(
    email_settings: Any,
    serve_process: ServeStarter,
    worker_process: Any,
    sio_connect: SioConnect,
    push_services: Any,
    tenant: str,
) -> None:
    from hub.vapid import generate_vapid_keys
    from tests.harness.push import BrowserSubscription

    vapid = generate_vapid_keys()
    settings = email_settings(
        **QUICK,
        push_policy="offline",
        vapid_private_key=vapid.private_key,
        vapid_subject="mailto:ops@example.com",
        push_timeout_seconds=2.0,
        email_sweep_interval_seconds=0.2,
    )
    nodes = await three_nodes(settings, serve_process)
    await worker_process(settings)
    ann = ApiClient.for_user(nodes[0].url, tenant, "ann")
    status, _ = await ann.post(
        "/api/devices/",
        {
            "kind": "webpush",
            "subscription": BrowserSubscription(f"{push_services.url}/wp/ann").as_json(),
        },
    )
    assert status == 201
    service = ApiClient.for_service(nodes[0].url, tenant)

    async def outcome(notification_id: str) -> str:
        async def final() -> str | None:
            _, body = await service.get(f"/api/notifications/{notification_id}/deliveries/")
            (item,) = body["items"]
            return str(item["status"]) if item["status"] in ("sent", "skipped") else None

        await eventually(final, timeout=20)
        return str(await final())

    # Connected on node 2 (not the node that stored the notification): no push.
    socket = await sio_connect(
        nodes[2].url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="ann")
    )
    (first,) = await service.notify(["ann"])
    await socket.wait_for("notification:new")
    assert await outcome(first) == "skipped"
    assert push_services.for_path("/wp/ann") == []
    # Gone (past the route's grace): pushed.
    await socket.client.disconnect()
    await asyncio.sleep(2.0)
    (second,) = await service.notify(["ann"])
    assert await outcome(second) == "sent"
    # Connected on node 1, which is then killed -9: pushed again once its heartbeat expires.
    await sio_connect(
        nodes[1].url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="ann")
    )
    (third,) = await service.notify(["ann"])
    assert await outcome(third) == "skipped"
    nodes[1].process.kill()
    await asyncio.to_thread(nodes[1].process.wait)
    await asyncio.sleep(QUICK["presence_node_ttl_seconds"] + 0.5)
    (fourth,) = await service.notify(["ann"])
    assert await outcome(fourth) == "sent"


async def test_routes_lost_by_redis_are_recorded_again_by_the_nodes_heartbeat(
    hub_settings: SettingsFactory,
    serve_process: ServeStarter,
    sio_connect: SioConnect,
    tenant: str,
    redis_url: str,
) -> None:
    # The lag check is far away: only the bus can bring the notification in time.
    settings = hub_settings(**QUICK, delivery_lag_check_seconds=60)
    node_a, node_b = await asyncio.gather(serve_process(settings), serve_process(settings))
    client = await sio_connect(
        node_b.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="u1")
    )
    redis = Redis.from_url(redis_url)
    try:
        # Redis restarted empty: the route map is gone, the sockets are not.
        for key in await redis.keys(f"{settings.socketio_channel}:routes:*"):
            await redis.delete(key)
    finally:
        await redis.aclose()
    await asyncio.sleep(QUICK["presence_node_ttl_seconds"])  # a heartbeat notices
    (created,) = await ApiClient.for_service(node_a.url, tenant).notify(["u1"])
    (live,) = await client.wait_for("notification:new", timeout=5)
    assert live["id"] == created


class HeldStore(LocalPresenceStore):
    """A store whose ``add`` answers only when the test lets it (a slow Redis)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def add(self, node: str, users: Sequence[UserKey]) -> list[UserKey]:
        await self.release.wait()
        return await super().add(node, users)


async def test_a_connecting_socket_waits_for_its_route_and_not_forever() -> None:
    """A socket's CONNECT is answered once its route is in the map (so a publisher that looks
    routes up after the client connected reaches its node), but a store that does not answer
    delays it only ROUTE_WAIT_SECONDS (the lag check then repairs)."""
    store = HeldStore()
    tracker = PresenceTracker(store, grace_seconds=1.0, node_ttl_seconds=5.0)
    tracker.start()
    try:
        tracker.connected(("t", "u1"))
        waiting = asyncio.create_task(tracker.recorded([("t", "u1")], timeout=5))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "answered before the route was recorded"
        store.release.set()
        assert await waiting is True
        assert await store.nodes_of(("t", "u1")) == {tracker.node}
        store.release.clear()
        tracker.connected(("t", "u2"))
        started = time.monotonic()
        assert await tracker.recorded([("t", "u2")], timeout=0.3) is False
        assert time.monotonic() - started < 2
    finally:
        store.release.set()
        await tracker.close()
