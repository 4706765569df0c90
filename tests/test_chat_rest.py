"""Chat over REST: send, retries, history, conversations, read receipts, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory


async def send(client: ApiClient, to: str, body: str, **extra: Any) -> tuple[int, Any]:
    return await client.post("/api/messages/send/", {"to_user_id": to, "body": body, **extra})


async def test_send_history_conversations_and_read(hub: RunningHub, tenant: str) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    status, first = await send(alice, "bob", "hi bob", client_msg_id="c-1")
    assert status == 201
    message = first["message"]
    assert set(message) == {
        "id",
        "conversation_id",
        "sender_id",
        "body",
        "client_msg_id",
        "created_at",
        "seq",
        "edited_at",
        "deleted_at",
    }
    assert (message["sender_id"], message["body"], message["seq"], message["client_msg_id"]) == (
        "alice",
        "hi bob",
        1,
        "c-1",
    )
    conversation = message["conversation_id"]

    # A retry with the same client_msg_id: 200, the first message, nothing new.
    assert await send(alice, "bob", "hi bob", client_msg_id="c-1") == (200, first)
    for i in range(3):
        await send(bob, "alice", f"reply {i}")

    status, history = await alice.get(f"/api/conversations/{conversation}/messages/")
    assert status == 200
    assert [m["seq"] for m in history["items"]] == [4, 3, 2, 1]
    assert history["next_cursor"] is None

    status, page = await alice.get("/api/conversations/", limit="10")
    assert status == 200
    (item,) = page["items"]
    assert item["id"] == conversation
    assert item["participants"] == ["alice", "bob"]
    assert item["last_message"]["body"] == "reply 2"
    assert item["unread_count"] == 3
    # Replying does not mark read: only a read receipt moves the pointer.
    assert (await bob.get("/api/conversations/"))[1]["items"][0]["unread_count"] == 1

    newest = history["items"][0]["id"]
    second = history["items"][2]["id"]
    assert await alice.post(f"/api/conversations/{conversation}/read/", {"message_id": second}) == (
        200,
        {"ok": True, "unread_count": 2},
    )
    assert await alice.post(f"/api/conversations/{conversation}/read/", {"message_id": newest}) == (
        200,
        {"ok": True, "unread_count": 0},
    )
    # An older message never moves the pointer back.
    assert await alice.post(f"/api/conversations/{conversation}/read/", {"message_id": second}) == (
        200,
        {"ok": True, "unread_count": 0},
    )
    assert (await alice.get("/api/conversations/"))[1]["items"][0]["unread_count"] == 0


async def test_message_history_pages_with_a_cursor(hub: RunningHub, tenant: str) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    for i in range(5):
        _, sent = await send(alice, "bob", f"m{i}")
    conversation = sent["message"]["conversation_id"]
    seen, cursor = [], None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        _, page = await alice.get(f"/api/conversations/{conversation}/messages/", **params)
        seen += [m["body"] for m in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == ["m4", "m3", "m2", "m1", "m0"]


async def test_history_after_a_seq_is_oldest_first_and_pages_on(
    hub: RunningHub, tenant: str
) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    for i in range(7):
        _, sent = await send(alice, "bob", f"m{i}")
    path = f"/api/conversations/{sent['message']['conversation_id']}/messages/"
    seen, cursor = [], None
    while True:
        params = {"after_seq": "2", "limit": "2"} | ({"cursor": cursor} if cursor else {})
        status, page = await alice.get(path, **params)
        assert status == 200, page
        seen += [m["seq"] for m in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [3, 4, 5, 6, 7]
    assert (await alice.get(path, after_seq="7"))[1] == {"items": [], "next_cursor": None}
    assert [m["seq"] for m in (await alice.get(path, after_seq="0"))[1]["items"]] == list(
        range(1, 8)
    )
    # A newest-first cursor is not one of this direction (and the other way round).
    _, newest = await alice.get(path, limit="2")
    status, answer = await alice.get(path, after_seq="0", cursor=newest["next_cursor"])
    assert (status, answer["error"]["code"]) == (400, "invalid_cursor")
    _, oldest = await alice.get(path, after_seq="0", limit="2")
    status, answer = await alice.get(path, cursor=oldest["next_cursor"])
    assert (status, answer["error"]["code"]) == (400, "invalid_cursor")


@pytest.mark.parametrize("value", ["-1", "x", "1.5", "", "9" * 19, "²"])
async def test_bad_after_seq_is_400(hub: RunningHub, tenant: str, value: str) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    _, sent = await send(alice, "bob", "hello")
    status, answer = await alice.get(
        f"/api/conversations/{sent['message']['conversation_id']}/messages/", after_seq=value
    )
    assert (status, answer["error"]["code"]) == (400, "validation_error"), answer


async def test_conversations_are_ordered_by_activity_and_paged(
    hub: RunningHub, tenant: str
) -> None:
    me = ApiClient.for_user(hub.url, tenant, "me")
    for peer in ("p1", "p2", "p3"):
        await send(me, peer, "hello")
    await send(ApiClient.for_user(hub.url, tenant, "p1"), "me", "bump")
    order, cursor = [], None
    while True:
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        status, page = await me.get("/api/conversations/", **params)
        assert status == 200
        order += [next(p for p in item["participants"] if p != "me") for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert order == ["p1", "p3", "p2"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"to_user_id": "alice", "body": "me"}, 400, "self_message"),
        ({"to_user_id": "bob", "body": ""}, 400, "validation_error"),
        ({"to_user_id": "bob", "body": "   "}, 400, "validation_error"),
        ({"to_user_id": "bob", "body": "x" * 4001}, 413, "payload_too_large"),
        ({"to_user_id": "bob"}, 400, "validation_error"),
        ({"to_user_id": "", "body": "x"}, 400, "validation_error"),
        ({"to_user_id": "bob", "body": 5}, 400, "validation_error"),
        ({"to_user_id": "bob", "body": "x", "client_msg_id": "x" * 101}, 400, "validation_error"),
    ],
)
async def test_send_is_validated(
    hub: RunningHub, tenant: str, body: dict[str, Any], status: int, code: str
) -> None:
    got, answer = await ApiClient.for_user(hub.url, tenant, "alice").post(
        "/api/messages/send/", body
    )
    assert (got, answer["error"]["code"]) == (status, code)


async def test_foreign_and_unknown_conversations_are_404(hub: RunningHub, tenant: str) -> None:
    _, sent = await send(ApiClient.for_user(hub.url, tenant, "alice"), "bob", "private")
    conversation, message = sent["message"]["conversation_id"], sent["message"]["id"]
    eve = ApiClient.for_user(hub.url, tenant, "eve")
    for path in (
        f"/api/conversations/{conversation}/messages/",
        "/api/conversations/999999999/messages/",
        "/api/conversations/abc/messages/",
    ):
        status, body = await eve.get(path)
        assert (status, body["error"]["code"]) == (404, "not_found"), path
    status, body = await eve.post(
        f"/api/conversations/{conversation}/read/", {"message_id": message}
    )
    assert status == 404
    # Bob may read it, but not with an id from elsewhere.
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    status, _ = await bob.post(
        f"/api/conversations/{conversation}/read/", {"message_id": "123456789"}
    )
    assert status == 404
    status, body = await bob.get(f"/api/conversations/{conversation}/messages/", cursor="%%%")
    assert (status, body["error"]["code"]) == (400, "invalid_cursor")


async def test_send_rate_limit_answers_429_with_retry_after(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, tenant: str
) -> None:
    hub = await hub_factory(hub_settings(chat_send_burst=3, chat_send_rate_per_second=0.5))
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    statuses = [(await send(alice, "bob", f"m{i}"))[0] for i in range(4)]
    assert statuses == [201, 201, 201, 429]
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{hub.url}/api/messages/send/",
            json={"to_user_id": "bob", "body": "again"},
            headers={"Authorization": f"Bearer {alice.token}"},
        ) as response,
    ):
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"]["code"] == "rate_limited"
    # Another user has a bucket of their own.
    assert (await send(ApiClient.for_user(hub.url, tenant, "bob"), "alice", "fine"))[0] == 201


async def test_concurrent_first_messages_create_one_conversation(
    hub: RunningHub, tenant: str
) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    results = await asyncio.gather(
        *(send(alice, "bob", f"a{i}") for i in range(5)),
        *(send(bob, "alice", f"b{i}") for i in range(5)),
    )
    assert {status for status, _ in results} == {201}
    assert len({body["message"]["conversation_id"] for _, body in results}) == 1
    assert sorted(body["message"]["seq"] for _, body in results) == list(range(1, 11))


async def test_concurrent_retries_store_one_message(hub: RunningHub, tenant: str) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    results = await asyncio.gather(
        *(send(alice, "bob", "once", client_msg_id="same") for _ in range(6))
    )
    assert sorted(status for status, _ in results) == [200] * 5 + [201]
    assert len({body["message"]["id"] for _, body in results}) == 1
    conversation = results[0][1]["message"]["conversation_id"]
    _, history = await alice.get(f"/api/conversations/{conversation}/messages/")
    assert [m["seq"] for m in history["items"]] == [1]
