"""``auth.last_seqs`` on ``/chat``: what a reconnecting client missed arrives first, in seq
order, with no gap and no duplicate, also while messages keep coming and after the node it
was on was killed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from hub.delivery.bus import LocalBus
from hub.keys import DB_SESSIONS, REALTIME
from hub.realtime import CHAT_NAMESPACE
from hub.services.chat import ChatLimits, ChatService
from hub.services.ratelimit import LocalTokenBucket
from tests.harness.api import ApiClient
from tests.harness.hub import (
    ConnectRefused,
    RecordingClient,
    RunningHub,
    ServeStarter,
    SettingsFactory,
    SioConnect,
)
from tests.harness.tokens import hs256_token

FAST = {"chat_send_burst": 100_000, "chat_send_rate_per_second": 100_000}


def seqs_of(client: RecordingClient, conversation: str) -> list[int]:
    return [
        m["seq"] for m in client.received("message:new") if m["conversation_id"] == conversation
    ]


def last_seen(client: RecordingClient, conversation: str) -> int:
    return (seqs_of(client, conversation) or [0])[-1]


async def wait_for_seq(
    client: RecordingClient, conversation: str, seq: int, timeout: float
) -> None:
    async with asyncio.timeout(timeout):
        while not seqs_of(client, conversation) or seqs_of(client, conversation)[-1] < seq:
            await asyncio.sleep(0.02)


async def keep_sending(url: str, tenant: str, conversation: str, count: int) -> None:
    """Alice and bob both write into the conversation at once, so seqs are allocated by two
    writers and may be published out of order."""

    async def write(user: str) -> None:
        client = ApiClient.for_user(url, tenant, user)
        peer = "bob" if user == "alice" else "alice"
        for i in range(count):
            status, body = await client.post(
                "/api/messages/send/", {"to_user_id": peer, "body": f"{user} {i}"}
            )
            assert status == 201, body

    await asyncio.gather(write("alice"), write("bob"))


async def start_conversation(url: str, tenant: str) -> str:
    _, sent = await ApiClient.for_user(url, tenant, "alice").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "first"}
    )
    conversation: str = sent["message"]["conversation_id"]
    return conversation


def resume_auth(tenant: str, conversation: str, last_seq: int) -> dict[str, Any]:
    return {
        "token": hs256_token(tenant=tenant, user="bob"),
        "last_seqs": {conversation: last_seq},
    }


async def test_reconnects_while_messages_keep_coming_miss_nothing_and_repeat_nothing(
    hub_factory: Any, hub_settings: SettingsFactory, tenant: str, sio_connect: SioConnect
) -> None:
    hub = await hub_factory(hub_settings(**FAST))
    conversation = await start_conversation(hub.url, tenant)
    total = 1 + 2 * 150
    sending = asyncio.create_task(keep_sending(hub.url, tenant, conversation, 150))
    connection = await sio_connect(
        hub.url, CHAT_NAMESPACE, auth=resume_auth(tenant, conversation, 0)
    )
    connections = [connection]
    for _ in range(4):
        await wait_for_seq(connection, conversation, last_seen(connection, conversation) + 20, 20)
        await connection.client.disconnect()
        resume = seqs_of(connection, conversation)[-1]
        connection = await sio_connect(
            hub.url, CHAT_NAMESPACE, auth=resume_auth(tenant, conversation, resume)
        )
        connections.append(connection)
    await sending
    await wait_for_seq(connection, conversation, total, 20)
    await asyncio.sleep(0.3)
    resume = 0
    for each in connections:
        got = seqs_of(each, conversation)
        assert got == list(range(resume + 1, resume + 1 + len(got))), "a gap or a duplicate"
        resume = got[-1]
    assert resume == total


async def test_resync_on_another_node_after_kill_9(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect, tenant: str
) -> None:
    settings = hub_settings(**FAST)
    node_a, node_b = await asyncio.gather(serve_process(settings), serve_process(settings))
    conversation = await start_conversation(node_b.url, tenant)
    on_a = await sio_connect(node_a.url, CHAT_NAMESPACE, auth=resume_auth(tenant, conversation, 0))
    total = 1 + 2 * 150
    sending = asyncio.create_task(keep_sending(node_b.url, tenant, conversation, 150))
    await wait_for_seq(on_a, conversation, 40, 20)
    node_a.process.kill()  # SIGKILL: no goodbye to anybody
    node_a.process.wait()
    before = seqs_of(on_a, conversation)
    assert before == list(range(1, len(before) + 1))
    on_b = await sio_connect(
        node_b.url, CHAT_NAMESPACE, auth=resume_auth(tenant, conversation, before[-1])
    )
    await sending
    await wait_for_seq(on_b, conversation, total, 20)
    await asyncio.sleep(0.3)
    assert seqs_of(on_b, conversation) == list(range(before[-1] + 1, total + 1))


async def test_resume_points_cover_several_conversations_and_new_ones(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    conversations = {}
    for peer in ("p1", "p2", "p3"):
        for i in range(3):
            _, sent = await bob.post("/api/messages/send/", {"to_user_id": peer, "body": str(i)})
        conversations[peer] = sent["message"]["conversation_id"]
    client = await sio_connect(
        hub.url,
        CHAT_NAMESPACE,
        auth={
            "token": hs256_token(tenant=tenant, user="bob"),
            # p1 from seq 1, p2 up to date, p3 not named (live only).
            "last_seqs": {conversations["p1"]: 1, conversations["p2"]: 3},
        },
    )
    await client.wait_for("message:new", 2)
    # Live messages follow, also in a conversation that did not exist at connect.
    for peer in ("p1", "p2", "p3", "p4"):
        await ApiClient.for_user(hub.url, tenant, peer).post(
            "/api/messages/send/", {"to_user_id": "bob", "body": "live"}
        )
    events = await client.wait_for("message:new", 6)
    await asyncio.sleep(0.2)
    assert [(m["conversation_id"], m["seq"]) for m in client.received("message:new")] == [
        (conversations["p1"], 2),
        (conversations["p1"], 3),
        (conversations["p1"], 4),
        (conversations["p2"], 4),
        (conversations["p3"], 4),
        (events[5]["conversation_id"], 1),
    ]


@pytest.mark.parametrize(
    "last_seqs",
    [[1, 2], "7", 5, {"1": -1}, {"1": "x"}, {"1": 1.5}, {"1": None}, {"1": True}],
)
async def test_malformed_last_seqs_refuse_the_connection(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, last_seqs: Any
) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await sio_connect(
            hub.url,
            CHAT_NAMESPACE,
            auth={"token": hs256_token(tenant=tenant, user="bob"), "last_seqs": last_seqs},
        )
    assert refused.value.data["data"]["code"] == "bad_request"


async def test_foreign_and_unknown_conversations_in_last_seqs_are_ignored(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    other_tenant = f"t-{uuid.uuid4().hex[:10]}"
    # Another tenant's conversation between users of the same names, and one of carol's.
    _, theirs = await ApiClient.for_user(hub.url, other_tenant, "alice").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "other tenant"}
    )
    _, carols = await ApiClient.for_user(hub.url, tenant, "carol").post(
        "/api/messages/send/", {"to_user_id": "dave", "body": "not bob's"}
    )
    client = await sio_connect(
        hub.url,
        CHAT_NAMESPACE,
        auth={
            "token": hs256_token(tenant=tenant, user="bob"),
            "last_seqs": {
                theirs["message"]["conversation_id"]: 0,
                carols["message"]["conversation_id"]: 0,
                "999999999999": 0,
                "not-an-id": 3,
            },
        },
    )
    await asyncio.sleep(0.5)
    assert client.received("message:new") == []
    assert client.client.connected


async def test_a_message_whose_bus_message_was_lost_still_arrives_without_a_reconnect(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    """A message stored whose bus message never comes (its node died between commit and
    publish, or Redis was away) reaches the connected sockets through every node's lag
    check, as notifications do: once, in order, without a reconnect."""
    conversation = await start_conversation(hub.url, tenant)
    bob = await sio_connect(hub.url, CHAT_NAMESPACE, auth=resume_auth(tenant, conversation, 1))
    await asyncio.sleep(0.3)  # set up and live
    # A chat service like the hub's, but whose publishes go nowhere.
    deaf = ChatService(
        sessions=hub.app[DB_SESSIONS],
        realtime=hub.app[REALTIME],
        bus=LocalBus(),
        limiter=LocalTokenBucket(rate_per_second=100, burst=100),
        limits=ChatLimits(),
    )
    await deaf.send(
        tenant_id=tenant, sender_id="alice", conversation_id=conversation, body="never published"
    )
    await wait_for_seq(bob, conversation, 2, timeout=6)
    await ApiClient.for_user(hub.url, tenant, "alice").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "published"}
    )
    await wait_for_seq(bob, conversation, 3, timeout=6)
    await asyncio.sleep(0.3)
    assert seqs_of(bob, conversation) == [2, 3]
    assert bob.client.connected


async def test_sending_while_redis_is_away_is_503(
    hub_factory: Any, hub_settings: SettingsFactory, private_redis: Any, tenant: str
) -> None:
    hub = await hub_factory(hub_settings(redis_url=private_redis.url))
    private_redis.kill()
    status, body = await ApiClient.for_user(hub.url, tenant, "alice").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "x"}
    )
    assert (status, body["error"]["code"]) == (503, "unavailable")
