"""Editing and deleting chat messages: sender only, tombstones, ``message:updated`` on
every device of both participants across processes, and bad input changing nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from hub.realtime import CHAT_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.chat import two_users_on_two_nodes
from tests.harness.hub import RunningHub, ServeStarter, SettingsFactory, SioConnect
from tests.harness.tokens import hs256_token


async def test_edit_and_delete_reach_every_device_on_both_processes(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect, tenant: str
) -> None:
    setup = await two_users_on_two_nodes(hub_settings, serve_process, sio_connect, tenant)
    alice_phone, alice_laptop, _, _ = devices = setup.devices
    node_b = setup.nodes[1]
    sent = (await alice_phone.call("message:send", {"to_user_id": "bob", "body": "helo"}))[
        "message"
    ]

    edited = await alice_laptop.call("message:edit", {"message_id": sent["id"], "body": "hello"})
    assert edited["ok"] is True
    message = edited["message"]
    assert (message["id"], message["body"], message["seq"]) == (sent["id"], "hello", sent["seq"])
    assert message["edited_at"] is not None and message["deleted_at"] is None
    for device in devices:
        (update,) = await device.wait_for("message:updated")
        assert update == message

    deleted = await alice_phone.call("message:delete", {"message_id": sent["id"]})
    tombstone = deleted["message"]
    assert deleted["ok"] is True
    assert (tombstone["body"], tombstone["id"]) == ("", sent["id"])
    assert tombstone["deleted_at"] is not None
    for device in devices:
        updates = await device.wait_for("message:updated", 2)
        assert updates[1] == tombstone

    # History (REST, on the other node) shows the tombstone in place.
    _, history = await ApiClient.for_user(node_b.url, tenant, "bob").get(
        f"/api/conversations/{sent['conversation_id']}/messages/"
    )
    assert history["items"] == [tombstone]
    # Deleting again answers the tombstone and emits nothing more.
    assert await alice_phone.call("message:delete", {"message_id": sent["id"]}) == deleted
    await asyncio.sleep(0.3)
    assert all(len(device.received("message:updated")) == 2 for device in devices)


async def test_rest_edit_and_delete_call_the_same_service(hub: RunningHub, tenant: str) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    _, sent = await alice.post("/api/messages/send/", {"to_user_id": "bob", "body": "v1"})
    message = sent["message"]
    path = f"/api/conversations/{message['conversation_id']}/messages/{message['id']}/"
    status, edited = await alice.request("PATCH", path, json={"body": "v2"})
    assert status == 200 and edited["message"]["body"] == "v2"
    assert edited["message"]["edited_at"] is not None
    status, deleted = await alice.request("DELETE", path)
    assert status == 200 and deleted["message"]["body"] == ""
    status, answer = await alice.request("PATCH", path, json={"body": "v3"})
    assert (status, answer["error"]["code"]) == (409, "deleted")


async def _history(client: ApiClient, conversation_id: str) -> list[dict[str, Any]]:
    status, page = await client.get(f"/api/conversations/{conversation_id}/messages/")
    assert status == 200
    items: list[dict[str, Any]] = page["items"]
    return items


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("message:edit", {"message_id": "{bob}", "body": "mine now"}, "not_sender"),
        ("message:delete", {"message_id": "{bob}"}, "not_sender"),
        ("message:edit", {"message_id": "{foreign}", "body": "x"}, "not_found"),
        ("message:delete", {"message_id": "{foreign}"}, "not_found"),
        ("message:edit", {"message_id": "999999999999", "body": "x"}, "not_found"),
        ("message:delete", {"message_id": "not-an-id"}, "not_found"),
        ("message:edit", {"message_id": "{alice}", "body": "x" * 4001}, "payload_too_large"),
        ("message:edit", {"message_id": "{alice}", "body": "   "}, "validation_error"),
        ("message:edit", {"message_id": "{alice}"}, "validation_error"),
        ("message:edit", {"message_id": "{alice}", "body": 5}, "validation_error"),
        ("message:delete", None, "validation_error"),
        ("message:delete", {"message_id": "{alice}", "extra": 1}, "validation_error"),
    ],
)
async def test_bad_edits_are_error_acks_and_change_nothing(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, event: str, payload: Any, code: str
) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    _, mine = await alice.post("/api/messages/send/", {"to_user_id": "bob", "body": "alice's"})
    conversation = mine["message"]["conversation_id"]
    _, theirs = await bob.post("/api/messages/send/", {"to_user_id": "alice", "body": "bob's"})
    # A message of another conversation (carol and dave) and of another tenant.
    carol = ApiClient.for_user(hub.url, tenant, "carol")
    _, foreign = await carol.post("/api/messages/send/", {"to_user_id": "dave", "body": "c"})
    ids = {
        "alice": mine["message"]["id"],
        "bob": theirs["message"]["id"],
        "foreign": foreign["message"]["id"],
    }
    if isinstance(payload, dict) and isinstance(payload.get("message_id"), str):
        payload = payload | {"message_id": payload["message_id"].format(**ids)}
    before = await _history(alice, conversation)
    socket = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    ack = await socket.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    assert await _history(alice, conversation) == before
    assert (await _history(carol, foreign["message"]["conversation_id"]))[0]["body"] == "c"
    await asyncio.sleep(0.2)
    assert socket.received("message:updated") == []
    assert socket.client.connected


async def test_another_tenants_message_is_not_found(hub: RunningHub, tenant: str) -> None:
    _, sent = await ApiClient.for_user(hub.url, tenant, "alice").post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "secret"}
    )
    message = sent["message"]
    path = f"/api/conversations/{message['conversation_id']}/messages/{message['id']}/"
    intruder = ApiClient.for_user(hub.url, tenant + "-x", "alice")  # same user id, other tenant
    for method, body in (("PATCH", {"body": "x"}), ("DELETE", None)):
        status, answer = await intruder.request(method, path, json=body)
        assert (status, answer["error"]["code"]) == (404, "not_found")
    status, history = await ApiClient.for_user(hub.url, tenant, "bob").get(
        f"/api/conversations/{message['conversation_id']}/messages/"
    )
    assert history["items"][0]["body"] == "secret"


async def test_ten_megabytes_change_nothing(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    _, sent = await alice.post("/api/messages/send/", {"to_user_id": "bob", "body": "small"})
    message = sent["message"]
    path = f"/api/conversations/{message['conversation_id']}/messages/{message['id']}/"
    huge = "x" * 10_000_000
    status, answer = await alice.request("PATCH", path, json={"body": huge})
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    # Over the socket a 10 MB frame is past the frame limit: that one connection ends (a
    # client cannot make the server buffer it), the others keep working.
    token = hs256_token(tenant=tenant, user="alice")
    bystander = await sio_connect(hub.url, CHAT_NAMESPACE, token=token)
    sender = await sio_connect(hub.url, CHAT_NAMESPACE, token=token)
    with pytest.raises(socketio.exceptions.SocketIOError):
        await sender.call("message:edit", {"message_id": message["id"], "body": huge}, timeout=3)
    assert (await _history(alice, message["conversation_id"]))[0]["body"] == "small"
    ack = await bystander.call("message:edit", {"message_id": message["id"], "body": "fine"})
    assert ack["ok"] is True and ack["message"]["body"] == "fine"


async def test_edit_window(
    hub_factory: Any, hub_settings: SettingsFactory, tenant: str, sio_connect: SioConnect
) -> None:
    hub = await hub_factory(hub_settings(chat_edit_window_seconds=1))
    socket = await sio_connect(
        hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    sent = (await socket.call("message:send", {"to_user_id": "bob", "body": "a"}))["message"]
    assert (await socket.call("message:edit", {"message_id": sent["id"], "body": "b"}))["ok"]
    await asyncio.sleep(1.2)
    ack = await socket.call("message:edit", {"message_id": sent["id"], "body": "c"})
    assert ack["error"]["code"] == "edit_window_closed"
    # Deleting is never limited.
    assert (await socket.call("message:delete", {"message_id": sent["id"]}))["ok"]


async def test_a_tenant_may_set_a_shorter_edit_window(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    other = tenant + "-o"
    status, body = await ApiClient.for_service(hub.url, tenant).request(
        "PUT", "/api/tenant/settings/", json={"chat_edit_window_seconds": 1}
    )
    assert status == 200 and body["chat_edit_window_seconds"] == 1, body
    sockets = [
        await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=t, user="alice"))
        for t in (tenant, other)
    ]
    sent = [
        (await s.call("message:send", {"to_user_id": "bob", "body": "a"}))["message"]
        for s in sockets
    ]
    assert (await sockets[0].call("message:edit", {"message_id": sent[0]["id"], "body": "b"}))["ok"]
    await asyncio.sleep(1.2)
    late = await sockets[0].call("message:edit", {"message_id": sent[0]["id"], "body": "c"})
    assert late["error"]["code"] == "edit_window_closed"
    # Another tenant (no window of its own, none for the hub) is not limited.
    assert (await sockets[1].call("message:edit", {"message_id": sent[1]["id"], "body": "c"}))["ok"]
