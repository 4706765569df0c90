"""Chat on the ``/chat`` namespace: multi-device, multi-process delivery, typing, receipts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from hub.realtime import CHAT_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.chat import two_users_on_two_nodes
from tests.harness.hub import RunningHub, ServeStarter, SettingsFactory, SioConnect
from tests.harness.tokens import hs256_token


async def test_message_reaches_all_four_devices_across_two_processes(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect, tenant: str
) -> None:
    setup = await two_users_on_two_nodes(hub_settings, serve_process, sio_connect, tenant)
    alice_phone, alice_laptop, bob_phone, bob_laptop = setup.devices

    ack = await alice_phone.call(
        "message:send", {"to_user_id": "bob", "body": "hello", "client_msg_id": "m-1"}
    )
    assert ack["ok"] is True
    stored = ack["message"]
    assert (stored["sender_id"], stored["body"], stored["seq"]) == ("alice", "hello", 1)
    for device in (alice_phone, alice_laptop, bob_phone, bob_laptop):
        (received,) = await device.wait_for("message:new")
        assert received == stored
    # A retry returns the first message and emits nothing new.
    again = await alice_laptop.call(
        "message:send", {"to_user_id": "bob", "body": "hello", "client_msg_id": "m-1"}
    )
    assert again == {"ok": True, "message": stored}

    reply = await bob_laptop.call(
        "message:send", {"conversation_id": stored["conversation_id"], "body": "hi!"}
    )
    for device in (alice_phone, alice_laptop, bob_phone, bob_laptop):
        messages = await device.wait_for("message:new", 2)
        assert messages[1] == reply["message"]

    receipt_ack = await bob_phone.call(
        "message:read", {"conversation_id": stored["conversation_id"], "message_id": stored["id"]}
    )
    assert receipt_ack == {"ok": True, "unread_count": 0}
    for device in (alice_phone, alice_laptop, bob_phone, bob_laptop):
        (receipt,) = await device.wait_for("message:read")
        assert receipt["conversation_id"] == stored["conversation_id"]
        assert (receipt["user_id"], receipt["message_id"]) == ("bob", stored["id"])
        assert receipt["read_at"].endswith("Z")
    await asyncio.sleep(0.3)
    for device in (alice_phone, alice_laptop, bob_phone, bob_laptop):
        assert len(device.received("message:new")) == 2, "a message arrived twice"


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("message:send", None, "validation_error"),
        ("message:send", {"to_user_id": "bob"}, "validation_error"),
        (
            "message:send",
            {"to_user_id": "bob", "conversation_id": "1", "body": "x"},
            "validation_error",
        ),
        ("message:send", {"to_user_id": "alice", "body": "x"}, "self_message"),
        ("message:send", {"to_user_id": "bob", "body": "x" * 4001}, "payload_too_large"),
        ("message:send", {"conversation_id": "999999999", "body": "x"}, "not_found"),
        ("message:read", {"conversation_id": "nope", "message_id": "1"}, "not_found"),
        ("typing", {"conversation_id": "999999999", "typing": True}, "not_found"),
        ("typing", {"conversation_id": "1", "typing": "yes"}, "validation_error"),
    ],
)
async def test_bad_socket_input_is_an_error_ack(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, event: str, payload: Any, code: str
) -> None:
    alice = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    ack = await alice.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert alice.client.connected
    # The socket keeps working.
    assert (await alice.call("message:send", {"to_user_id": "bob", "body": "still here"}))["ok"]


async def test_unread_counts_stay_exact_through_a_scripted_conversation(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    tenant: str,
    sio_connect: SioConnect,
) -> None:
    hub = await hub_factory(hub_settings(chat_send_burst=1000, chat_send_rate_per_second=1000))
    users = {"alice": None, "bob": None}
    sockets = {
        name: await sio_connect(
            hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user=name)
        )
        for name in users
    }
    rng = random.Random(20261129)
    sent: list[dict[str, Any]] = []
    read_seq = {"alice": 0, "bob": 0}  # the independent model: each user's read pointer
    conversation: str | None = None
    for step in range(200):
        sender = rng.choice(["alice", "bob"])
        peer = "bob" if sender == "alice" else "alice"
        payload = {"body": f"message {step}"} | (
            {"conversation_id": conversation} if conversation else {"to_user_id": peer}
        )
        ack = await sockets[sender].call("message:send", payload)
        assert ack["ok"], ack
        sent.append(ack["message"])
        conversation = ack["message"]["conversation_id"]
        if rng.random() < 0.2:
            reader = rng.choice(["alice", "bob"])
            target = rng.choice(sent)  # sometimes older than the pointer: it must not move back
            ack = await sockets[reader].call(
                "message:read", {"conversation_id": conversation, "message_id": target["id"]}
            )
            read_seq[reader] = max(read_seq[reader], target["seq"])
            expected = sum(
                1 for m in sent if m["seq"] > read_seq[reader] and m["sender_id"] != reader
            )
            assert ack == {"ok": True, "unread_count": expected}, step
    for name in users:
        expected = sum(1 for m in sent if m["seq"] > read_seq[name] and m["sender_id"] != name)
        _, page = await ApiClient.for_user(hub.url, tenant, name).get("/api/conversations/")
        assert page["items"][0]["unread_count"] == expected, name
    assert [m["seq"] for m in sent] == list(range(1, 201))


async def test_typing_is_throttled_relayed_to_the_peer_only_and_expires(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    tenant: str,
    sio_connect: SioConnect,
) -> None:
    throttle, expiry = 0.4, 0.8
    hub = await hub_factory(
        hub_settings(typing_throttle_seconds=throttle, typing_expiry_seconds=expiry)
    )
    alice_token = hs256_token(tenant=tenant, user="alice")
    alice = await sio_connect(hub.url, CHAT_NAMESPACE, token=alice_token)
    alice_tablet = await sio_connect(hub.url, CHAT_NAMESPACE, token=alice_token)
    bob = await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob"))
    carol = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="carol")
    )
    sent = await alice.call("message:send", {"to_user_id": "bob", "body": "hey"})
    conversation = sent["message"]["conversation_id"]

    # Five refreshes within one throttle window: one relay.
    for _ in range(5):
        assert await alice.call("typing", {"conversation_id": conversation, "typing": True}) == {
            "ok": True
        }
        await asyncio.sleep(throttle / 10)
    events = await bob.wait_for("typing")
    assert events == [{"conversation_id": conversation, "user_id": "alice", "typing": True}]
    # Refreshes keep it alive past the expiry; after the window, one more relay.
    await asyncio.sleep(throttle)
    await alice.call("typing", {"conversation_id": conversation, "typing": True})
    await bob.wait_for("typing", 2)
    # No refresh for the expiry interval: typing false, once.
    falses = await bob.wait_for("typing", 3, timeout=expiry * 3)
    assert falses[2] == {"conversation_id": conversation, "user_id": "alice", "typing": False}
    await asyncio.sleep(expiry)
    assert len(bob.received("typing")) == 3
    # The typer and third parties never see the relay.
    assert (
        alice.received("typing")
        == alice_tablet.received("typing")
        == carol.received("typing")
        == []
    )

    # Explicit stop relays false at once; a new start after a stop is relayed immediately.
    await alice.call("typing", {"conversation_id": conversation, "typing": True})
    await bob.wait_for("typing", 4)
    await alice.call("typing", {"conversation_id": conversation, "typing": False})
    assert (await bob.wait_for("typing", 5, timeout=expiry / 2))[4]["typing"] is False
    await alice.call("typing", {"conversation_id": conversation, "typing": True})
    assert (await bob.wait_for("typing", 6, timeout=throttle / 2))[5]["typing"] is True

    # The typer disconnects: typing false without waiting for the expiry.
    await alice.client.disconnect()
    assert (await bob.wait_for("typing", 7, timeout=expiry / 2))[6]["typing"] is False


async def test_typing_state_is_shared_across_processes(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect, tenant: str
) -> None:
    settings = hub_settings(typing_throttle_seconds=1.0, typing_expiry_seconds=1.5)
    node_a, node_b = await asyncio.gather(serve_process(settings), serve_process(settings))
    token = hs256_token(tenant=tenant, user="alice")
    alice_a = await sio_connect(node_a.url, CHAT_NAMESPACE, token=token)
    alice_b = await sio_connect(node_b.url, CHAT_NAMESPACE, token=token)
    bob = await sio_connect(
        node_a.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob")
    )
    conversation = (await alice_a.call("message:send", {"to_user_id": "bob", "body": "x"}))[
        "message"
    ]["conversation_id"]
    # Refreshes alternate between the nodes: still one relay per throttle window.
    for device in (alice_a, alice_b, alice_a, alice_b):
        await device.call("typing", {"conversation_id": conversation, "typing": True})
    await bob.wait_for("typing")
    await asyncio.sleep(0.3)
    assert len(bob.received("typing")) == 1
    # The last refresh came through node B; only its expiry relays the false, once.
    events = await bob.wait_for("typing", 2, timeout=4)
    assert events[1]["typing"] is False
    await asyncio.sleep(1.0)
    assert len(bob.received("typing")) == 2


async def test_tenants_are_isolated_in_chat(hub: RunningHub, sio_connect: SioConnect) -> None:
    import uuid

    tenant_a, tenant_b = f"A-{uuid.uuid4().hex[:8]}", f"B-{uuid.uuid4().hex[:8]}"
    alice_a = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant_a, user="alice")
    )
    bob_a = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant_a, user="bob")
    )
    bob_b = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant_b, user="bob")
    )
    alice_b = ApiClient.for_user(hub.url, tenant_b, "alice")
    sent = await alice_a.call("message:send", {"to_user_id": "bob", "body": "secret"})
    conversation, message = sent["message"]["conversation_id"], sent["message"]["id"]
    await bob_a.wait_for("message:new")

    # Tenant B's alice and bob, same ids, see nothing of tenant A's conversation.
    for path in ("/api/conversations/", f"/api/conversations/{conversation}/messages/"):
        status, body = await alice_b.get(path)
        assert (status, body.get("items")) in [(200, []), (404, None)], path
    assert (
        await alice_b.post(f"/api/conversations/{conversation}/read/", {"message_id": message})
    )[0] == 404
    ack = await bob_b.call("message:send", {"conversation_id": conversation, "body": "intrude"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"
    ack = await bob_b.call("message:read", {"conversation_id": conversation, "message_id": message})
    assert ack["error"]["code"] == "not_found"
    ack = await bob_b.call("typing", {"conversation_id": conversation, "typing": True})
    assert ack["error"]["code"] == "not_found"
    await asyncio.sleep(0.2)
    assert bob_b.received("message:new") == []
    assert alice_a.received("typing") == []
    # Sending "to bob" in tenant B reaches B's bob only.
    await ApiClient.for_user(hub.url, tenant_b, "alice").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "for B"}
    )
    (only,) = await bob_b.wait_for("message:new")
    assert only["body"] == "for B"
    await asyncio.sleep(0.2)
    assert [m["body"] for m in bob_a.received("message:new")] == ["secret"]
