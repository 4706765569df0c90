"""Presence across nodes: online while any socket of the user is connected anywhere,
offline after the grace period (no flapping on reconnects), told only to users who share a
conversation, and a killed node's users going offline by themselves."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from hub.keys import PRESENCE
from hub.realtime import CHAT_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import (
    RecordingClient,
    RunningHub,
    ServeStarter,
    SettingsFactory,
    SioConnect,
)
from tests.harness.tokens import hs256_token

GRACE, TTL = 1.5, 1.5
QUICK = {"presence_grace_seconds": GRACE, "presence_node_ttl_seconds": TTL}


async def befriend(url: str, tenant: str, user: str, peer: str) -> None:
    status, _ = await ApiClient.for_user(url, tenant, user).post(
        "/api/messages/send/", {"to_user_id": peer, "body": "hi"}
    )
    assert status == 201


def presence_of(client: RecordingClient, user: str) -> list[str]:
    return [p["status"] for p in client.received("presence") if p["user_id"] == user]


async def wait_for_presence(
    client: RecordingClient, user: str, statuses: list[str], timeout: float
) -> None:
    async with asyncio.timeout(timeout):
        while presence_of(client, user) != statuses:
            assert len(presence_of(client, user)) <= len(statuses), presence_of(client, user)
            await asyncio.sleep(0.02)


async def rest_status(url: str, tenant: str, asker: str, user: str) -> dict[str, Any]:
    status, page = await ApiClient.for_user(url, tenant, asker).get("/api/presence/", user_ids=user)
    assert status == 200, page
    (item,) = page["items"]
    return dict(item)


async def test_online_offline_across_two_nodes_without_flapping(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect, tenant: str
) -> None:
    settings = hub_settings(**QUICK)
    node_a, node_b = await asyncio.gather(serve_process(settings), serve_process(settings))
    await befriend(node_a.url, tenant, "alice", "bob")
    await befriend(node_a.url, tenant, "carol", "dave")  # no conversation with bob
    alice = await sio_connect(
        node_a.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    carol = await sio_connect(
        node_a.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="carol")
    )
    bob_token = hs256_token(tenant=tenant, user="bob")
    assert (await rest_status(node_a.url, tenant, "alice", "bob"))["status"] == "offline"

    bob_phone = await sio_connect(node_b.url, CHAT_NAMESPACE, token=bob_token)
    await wait_for_presence(alice, "bob", ["online"], timeout=3)
    online = await rest_status(node_a.url, tenant, "alice", "bob")
    assert online == {"user_id": "bob", "status": "online", "last_seen_at": None}

    # A second device, then the first one reconnecting on the other node within the grace
    # period: no event at all.
    bob_laptop = await sio_connect(node_a.url, CHAT_NAMESPACE, token=bob_token)
    await bob_phone.client.disconnect()
    await asyncio.sleep(GRACE / 3)
    await bob_laptop.client.disconnect()
    bob_phone = await sio_connect(node_a.url, CHAT_NAMESPACE, token=bob_token)
    await asyncio.sleep(GRACE * 2.5)
    assert presence_of(alice, "bob") == ["online"]

    left = time.time()
    await bob_phone.client.disconnect()
    await wait_for_presence(alice, "bob", ["online", "offline"], timeout=GRACE + 3)
    (_, offline) = [p for p in alice.received("presence") if p["user_id"] == "bob"]
    assert offline["last_seen_at"] is not None
    seen = offline["last_seen_at"]
    assert (await rest_status(node_b.url, tenant, "alice", "bob"))["last_seen_at"] == seen
    assert abs(_unix(seen) - left) < 2.0
    assert carol.received("presence") == []


def _unix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_users_of_a_killed_node_go_offline(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect, tenant: str
) -> None:
    settings = hub_settings(**QUICK)
    node_a, node_b = await asyncio.gather(serve_process(settings), serve_process(settings))
    await befriend(node_b.url, tenant, "alice", "bob")
    alice = await sio_connect(
        node_b.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    await sio_connect(node_a.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob"))
    await wait_for_presence(alice, "bob", ["online"], timeout=3)
    killed = time.time()
    node_a.process.kill()  # the node holding bob's only socket; it tells nobody
    node_a.process.wait()
    # Offline within the grace period plus the node's record expiry (and a sweep or two).
    await wait_for_presence(alice, "bob", ["online", "offline"], timeout=GRACE + TTL + 3)
    assert time.time() - killed >= GRACE
    assert (await rest_status(node_b.url, tenant, "alice", "bob"))["status"] == "offline"


async def test_presence_is_per_tenant_and_validated(
    hub_factory: Any, hub_settings: SettingsFactory, tenant: str, sio_connect: SioConnect
) -> None:
    hub = await hub_factory(hub_settings(**QUICK))
    await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob"))
    other = f"t-{uuid.uuid4().hex[:10]}"
    async with asyncio.timeout(3):
        while (await rest_status(hub.url, tenant, "alice", "bob"))["status"] != "online":
            await asyncio.sleep(0.05)
    # The same user id in another tenant is somebody else.
    assert await rest_status(hub.url, other, "alice", "bob") == {
        "user_id": "bob",
        "status": "offline",
        "last_seen_at": None,
    }
    asker = ApiClient.for_user(hub.url, tenant, "alice")
    status, page = await asker.get("/api/presence/", user_ids="bob,nobody,bob")
    assert status == 200
    assert [(i["user_id"], i["status"]) for i in page["items"]] == [
        ("bob", "online"),
        ("nobody", "offline"),
    ]
    for bad in ({}, {"user_ids": ""}, {"user_ids": ",".join(f"u{i}" for i in range(101))}):
        status, answer = await asker.get("/api/presence/", **bad)
        assert (status, answer["error"]["code"]) == (400, "validation_error"), bad


async def test_one_round_trip_for_a_users_first_socket_none_for_the_next(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    tracker = hub.app[PRESENCE].tracker
    before = tracker.round_trips
    token = hs256_token(tenant=tenant, user="bob")
    await sio_connect(hub.url, CHAT_NAMESPACE, token=token)
    async with asyncio.timeout(3):
        while not (await tracker.store.statuses([(tenant, "bob")]))[(tenant, "bob")].online:
            await asyncio.sleep(0.02)
    assert tracker.round_trips - before == 1
    for _ in range(3):
        await sio_connect(hub.url, CHAT_NAMESPACE, token=token)
    await asyncio.sleep(0.3)
    assert tracker.round_trips - before == 1
    # Many users connecting at once share round trips.
    before = tracker.round_trips
    await asyncio.gather(
        *(
            sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user=f"u{i}"))
            for i in range(40)
        )
    )
    await asyncio.sleep(0.3)
    assert 1 <= tracker.round_trips - before < 40


async def test_without_redis_presence_is_tracked_in_process(
    hub_factory: Any, hub_settings: SettingsFactory, tenant: str, sio_connect: SioConnect
) -> None:
    hub = await hub_factory(hub_settings(redis_url=None, **QUICK))
    await befriend(hub.url, tenant, "alice", "bob")
    alice = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    bob = await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob"))
    await wait_for_presence(alice, "bob", ["online"], timeout=3)
    await bob.client.disconnect()
    await wait_for_presence(alice, "bob", ["online", "offline"], timeout=GRACE + 2)
