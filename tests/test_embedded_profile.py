"""The embedded profile (SQLite, in-process Socket.IO manager and bus, no Redis) end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import SettingsFactory, SioConnect
from tests.harness.tokens import hs256_token


async def test_notifications_and_chat_on_sqlite_without_redis(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    sio_connect: SioConnect,
    tmp_path: Path,
) -> None:
    hub = await hub_factory(
        hub_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            redis_url=None,
            auto_migrate=True,
        )
    )
    tenant = "t-embedded"
    service = ApiClient.for_service(hub.url, tenant)
    await service.notify(["alice", "bob"], title="stored")
    live = await sio_connect(
        hub.url,
        NOTIFICATIONS_NAMESPACE,
        auth={"token": hs256_token(tenant=tenant, user="alice"), "last_seq": 0},
    )
    (replayed,) = await live.wait_for("notification:new")
    assert replayed["title"] == "stored" and replayed["seq"] == 1
    ids = await service.notify(["alice"], title="live", data={"k": [1, 2]}, idempotency_key="k1")
    assert await service.notify(["alice"], title="live", idempotency_key="k1") == ids
    second = (await live.wait_for("notification:new", 2))[1]
    assert (second["title"], second["seq"], second["data"]) == ("live", 2, {"k": [1, 2]})
    assert second["created_at"].endswith("Z")

    alice = ApiClient.for_user(hub.url, tenant, "alice")
    _, page = await alice.get("/api/notifications/", limit="1")
    assert [n["seq"] for n in page["items"]] == [2] and page["unread_count"] == 2
    _, rest = await alice.get("/api/notifications/", cursor=page["next_cursor"])
    assert [n["seq"] for n in rest["items"]] == [1]
    ack = await live.call("notification:mark_read", {"all": True})
    assert ack == {"ok": True, "updated": 2, "unread_count": 0}
    assert (await live.wait_for("notification:read"))[0] == {"all": True, "unread_count": 0}
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    assert (await bob.get("/api/notifications/unread-count/"))[1]["unread_count"] == 1

    broadcast_status, _ = await service.post("/api/broadcasts/", {"title": "t", "body": "b"})
    assert broadcast_status == 202
    await live.wait_for("broadcast")

    chat = await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob"))
    status, sent = await alice.post("/api/messages/send/", {"to_user_id": "bob", "body": "hi"})
    assert status == 201
    (received,) = await chat.wait_for("message:new")
    assert received == sent["message"]
    conversation = sent["message"]["conversation_id"]
    assert await chat.call(
        "message:read", {"conversation_id": conversation, "message_id": sent["message"]["id"]}
    ) == {"ok": True, "unread_count": 0}
    _, conversations = await bob.get("/api/conversations/")
    assert conversations["items"][0]["last_message"]["body"] == "hi"
