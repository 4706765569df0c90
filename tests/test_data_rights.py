"""Users' data rights: ``GET /api/users/{id}/export/`` and ``DELETE /api/users/{id}/``.

The export holds every kind of record and nothing of another tenant, and is streamed (its
memory stays bounded for a large user); the erasure changes what both participants of a
conversation see (REST history and a resync), keeps its audit row, closes the erased user's
sockets on every node and nobody else's, and leaves no half state when notifications are
created for the user meanwhile. The embedded profile (SQLite, in-process bus) does all of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import (
    DigestWindow,
    Email,
    Notification,
    NotificationCounter,
    PushDelivery,
    ScheduledEvent,
    UserErasure,
    WebhookDelivery,
)
from hub.keys import DATA_RIGHTS, DB_SESSIONS
from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from hub.responses import UserExport
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.hub import (
    RecordingClient,
    RunningHub,
    ServeStarter,
    SettingsFactory,
    SioConnect,
)
from tests.harness.legacy_ws import LegacyConnect
from tests.harness.ports import eventually
from tests.harness.proxy import ProxyFactory
from tests.harness.services import PrivateRedis
from tests.harness.tokens import hs256_token


def own(hub_settings: SettingsFactory, **overrides: Any) -> Settings:
    """Settings on a channel of this test's own: no other test's worker takes its tasks."""
    return hub_settings(socketio_channel=f"rights-{uuid.uuid4().hex[:12]}", **overrides)


KINDS = (
    "devices",
    "conversations",
    "notifications",
    "push_deliveries",
    "messages",
    "emails",
)


async def export_of(hub_url: str, tenant: str, user: str) -> tuple[dict[str, Any], Any]:
    """The export document and the response headers."""
    service = ApiClient.for_service(hub_url, tenant)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{hub_url}/api/users/{user}/export/",
            headers={"Authorization": f"Bearer {service.token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        document = await response.json()
        return document, response.headers


async def erase(hub_url: str, tenant: str, user: str) -> dict[str, int]:
    status, body = await ApiClient.for_service(hub_url, tenant).delete(f"/api/users/{user}/")
    assert status == 200, body
    counts: dict[str, int] = body["erased"]
    return counts


async def populate(hub_url: str, tenant: str, *, tag: str) -> dict[str, Any]:
    """One of each kind of record for alice (and a conversation with bob): a webhook hears
    about it, a device gets its pushes, an event makes an email."""
    service = ApiClient.for_service(hub_url, tenant)
    alice = ApiClient.for_user(hub_url, tenant, "alice")
    bob = ApiClient.for_user(hub_url, tenant, "bob")
    status, hook = await service.post(
        "/api/webhooks/",
        {
            "url": "http://127.0.0.1:9/hook",
            "events": ["notification.created", "message.created", "notification.read"],
        },
    )
    assert status == 201, hook
    status, device = await alice.post("/api/devices/", {"kind": "fcm", "token": f"fcm-{tag}"})
    assert status == 201, device
    status, _ = await alice.request(
        "PATCH", "/api/preferences/", json={"categories": {"deals": {"email": False}}}
    )
    assert status == 200
    await service.notify(["alice"], title=f"first {tag}")
    await service.notify(["alice", "bob"], title=f"second {tag}")
    status, accepted = await service.post(
        "/api/events/",
        {
            "event_id": f"e-{tag}",
            "tenant_id": tenant,
            "type": "deal.won",
            "recipients": [{"user_id": "alice", "email": f"alice-{tag}@example.com"}],
            "email": {"template_key": "welcome", "context": {"Name": f"Alice {tag}"}},
        },
    )
    assert status == 202, accepted
    status, sent = await alice.post(
        "/api/messages/send/", {"to_user_id": "bob", "body": f"hello bob {tag}"}
    )
    assert status == 201, sent
    status, reply = await bob.post(
        "/api/messages/send/", {"to_user_id": "alice", "body": f"hi alice {tag}"}
    )
    assert status == 201, reply
    status, _ = await alice.post("/api/notifications/mark-as-read/", {"all": True})
    assert status == 200
    return {"hook": hook, "conversation_id": sent["message"]["conversation_id"]}


async def test_export_has_every_kind_of_record_and_nothing_of_another_tenant(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, tenant: str
) -> None:
    hub: RunningHub = await hub_factory(own(hub_settings, webhooks_allow_private=True))
    other = f"{tenant}-other"
    await populate(hub.url, tenant, tag="mine")
    await populate(hub.url, other, tag="theirs")

    document, headers = await export_of(hub.url, tenant, "alice")
    assert headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in headers
    UserExport.model_validate(document)  # the documented shape
    assert list(document) == [
        "user_id",
        "tenant_id",
        "exported_at",
        "preferences",
        *KINDS,
        "digest_windows",
        "scheduled_events",
    ]
    assert (document["user_id"], document["tenant_id"]) == ("alice", tenant)
    for kind in KINDS:
        assert document[kind], kind
    assert document["preferences"]["categories"] == {"deals": {"email": False}}
    (device,) = document["devices"]
    assert device["token"] == "fcm-mine" and set(device) == {"id", "kind", "token", "created_at"}
    assert [n["title"] for n in document["notifications"]] == ["first mine", "second mine"]
    assert all(n["read_at"] for n in document["notifications"])
    assert {p["notification_id"] for p in document["push_deliveries"]} == {
        n["id"] for n in document["notifications"]
    }
    assert [m["body"] for m in document["messages"]] == ["hello bob mine", "hi alice mine"]
    assert document["conversations"][0]["peer_id"] == "bob"
    (email,) = document["emails"]
    assert email["to_email"] == "alice-mine@example.com"
    assert email["context"] == {"Name": "Alice mine"}
    assert "theirs" not in str(document)

    # Someone the hub knows nothing of: empty lists, not 404.
    empty, _ = await export_of(hub.url, tenant, "nobody")
    assert empty["preferences"] is None and all(empty[kind] == [] for kind in KINDS)


async def test_every_list_pages_into_one_valid_document(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, tenant: str
) -> None:
    """Pages of two rows: every list spans several pages (messages over three conversations
    too) and the document is still one valid JSON object with every row exactly once."""
    hub: RunningHub = await hub_factory(own(hub_settings))
    hub.app[DATA_RIGHTS].page_rows = 2
    service = ApiClient.for_service(hub.url, tenant)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    for n in range(3):
        status, _ = await alice.post("/api/devices/", {"kind": "apns", "token": f"apns-{n}"})
        assert status == 201
    for n in range(5):
        await service.notify(["alice"], title=f"n{n}")
    sent = []
    for peer in ("bob", "carol", "dan"):
        for n in range(3):
            status, body = await alice.post(
                "/api/messages/send/", {"to_user_id": peer, "body": f"{peer} {n}"}
            )
            assert status == 201, body
            sent.append(body["message"]["id"])
    for n in range(3):
        status, _ = await service.post(
            "/api/events/",
            {
                "event_id": f"e{n}",
                "tenant_id": tenant,
                "type": "t",
                "recipients": [{"user_id": "alice", "email": f"a{n}@example.com"}],
                "email": {"template_key": "welcome", "context": {}},
            },
        )
        assert status == 202
    document, _ = await export_of(hub.url, tenant, "alice")
    UserExport.model_validate(document)
    assert len(document["devices"]) == 3 and len(document["conversations"]) == 3
    assert [n["seq"] for n in document["notifications"]] == [1, 2, 3, 4, 5]
    assert len(document["push_deliveries"]) == 15
    assert sorted(m["id"] for m in document["messages"]) == sorted(sent)
    assert sorted(e["to_email"] for e in document["emails"]) == [
        "a0@example.com",
        "a1@example.com",
        "a2@example.com",
    ]


async def test_roles_and_bad_user_ids(hub: RunningHub, tenant: str) -> None:
    user = ApiClient.for_user(hub.url, tenant, "alice")
    service = ApiClient.for_service(hub.url, tenant)
    for method, path in (("GET", "/api/users/alice/export/"), ("DELETE", "/api/users/alice/")):
        status, body = await user.request(method, path)
        assert (status, body["error"]["code"]) == (403, "forbidden"), path
        anonymous = ApiClient(hub.url, "not-a-token")
        assert (await anonymous.request(method, path))[0] == 401
        for bad in ("u" * 129, "bad%01id", "%7F"):
            status, body = await service.request(method, path.replace("alice", bad))
            assert (status, body["error"]["code"]) == (400, "validation_error"), (method, bad)


async def _traced_export(hub_url: str, tenant: str, user: str) -> tuple[int, int, int, bytes]:
    """Read an export as it comes: (bytes, chunks, peak traced memory, the last bytes)."""
    service = ApiClient.for_service(hub_url, tenant)
    size = chunks = 0
    tail = b""
    tracemalloc.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{hub_url}/api/users/{user}/export/",
                headers={"Authorization": f"Bearer {service.token}"},
            ) as response,
        ):
            assert response.status == 200
            assert response.headers["Transfer-Encoding"] == "chunked"
            async for chunk, _ in response.content.iter_chunks():
                size += len(chunk)
                chunks += 1
                tail = (tail + chunk)[-64:]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size, chunks, peak, tail


async def test_export_is_streamed_in_bounded_memory(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, tenant: str
) -> None:
    """The reply comes in many chunks, and the peak of memory traced in the process (hub and
    client) while it streams is the same for 2,000 and for 20,000 notifications, and below
    the larger document's size: a document built whole would grow with the rows."""
    hub: RunningHub = await hub_factory(own(hub_settings))
    sessions: async_sessionmaker[AsyncSession] = hub.app[DB_SESSIONS]
    for user, count in (("small", 2_000), ("big", 20_000)):
        async with sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO notifications (tenant_id, user_id, seq, title, body, data, "
                    "created_at) SELECT :tenant, :user, n, 'Deal ' || n, repeat('x', 200), "
                    "CAST('{\"deal\": 1}' AS jsonb), now() FROM generate_series(1, :count) AS n"
                ),
                {"tenant": tenant, "user": user, "count": count},
            )
    await _traced_export(hub.url, tenant, "small")  # caches and pools warm
    small = await _traced_export(hub.url, tenant, "small")
    size, chunks, peak, tail = await _traced_export(hub.url, tenant, "big")
    print(
        f"export: 2,000 notifications peak {small[2]} B; 20,000: {size} B in {chunks} chunks, "
        f"peak {peak} B"
    )
    assert tail.endswith(b'"scheduled_events":[]}')
    assert size > 5_000_000 and chunks >= 10
    assert peak < small[2] * 1.5 + 1_000_000, (peak, small[2])
    assert peak < size / 2, (peak, size)


async def test_erase_both_participants_audit_and_another_tenant(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    sio_connect: SioConnect,
    tenant: str,
) -> None:
    hub: RunningHub = await hub_factory(own(hub_settings, webhooks_allow_private=True))
    other = f"{tenant}-other"
    setup = await populate(hub.url, tenant, tag="mine")
    await populate(hub.url, other, tag="theirs")
    conversation = setup["conversation_id"]

    counts = await erase(hub.url, tenant, "alice")
    assert counts == {
        "notifications": 2,
        "push_deliveries": 2,
        "devices": 1,
        "preferences": 1,
        "messages": 1,
        "emails": 1,
        "webhook_deliveries": 4,  # two notifications, her read mark, her message
        "digest_windows": 0,
        "scheduled_events": 0,
    }
    # Her own data is gone from the export; the email record stays, without the address.
    document, _ = await export_of(hub.url, tenant, "alice")
    assert document["preferences"] is None
    for kind in ("devices", "notifications", "push_deliveries"):
        assert document[kind] == [], kind
    (email,) = document["emails"]
    assert (email["to_email"], email["context"], email["subject"]) == ("", {}, None)
    assert email["status"] == "failed" and email["last_error"] == "erased at the user's request"
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    _, page = await alice.get("/api/notifications/")
    assert page["items"] == [] and page["unread_count"] == 0

    # Bob's history keeps her message as a placeholder, and his own as it was.
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    _, history = await bob.get(f"/api/conversations/{conversation}/messages/")
    mine, hers = history["items"]
    assert (mine["sender_id"], mine["body"], mine["deleted_at"]) == ("bob", "hi alice mine", None)
    assert (hers["sender_id"], hers["body"]) == ("alice", "")
    assert hers["deleted_at"] is not None
    # ... and so does a resync from the start.
    resync = await sio_connect(
        hub.url,
        CHAT_NAMESPACE,
        auth={"token": hs256_token(tenant=tenant, user="bob"), "last_seqs": {conversation: 0}},
    )
    replayed = await resync.wait_for("message:new", 2)
    assert [(m["sender_id"], m["body"]) for m in replayed] == [
        ("alice", ""),
        ("bob", "hi alice mine"),
    ]
    assert replayed[0]["deleted_at"] == hers["deleted_at"]
    _, bob_inbox = await bob.get("/api/notifications/")
    assert [n["title"] for n in bob_inbox["items"]] == ["second mine"]

    # Webhook deliveries about her lost their payload; those about bob did not.
    sessions: async_sessionmaker[AsyncSession] = hub.app[DB_SESSIONS]
    async with sessions() as session:
        rows = (
            await session.execute(
                select(WebhookDelivery.type, WebhookDelivery.status, WebhookDelivery.payload)
                .where(WebhookDelivery.tenant_id == tenant)
                .order_by(WebhookDelivery.id)
            )
        ).all()
    erased = [row for row in rows if row.payload == {"erased": True}]
    assert len(erased) == 4 and {row.status for row in erased} == {"cancelled"}
    kept = [row.payload["data"] for row in rows if row.payload != {"erased": True}]
    assert kept and "alice" not in str(kept).replace("'hi alice mine'", "")

    # The other tenant's alice is untouched.
    theirs, _ = await export_of(hub.url, other, "alice")
    assert all(theirs[kind] for kind in KINDS)
    assert theirs["emails"][0]["to_email"] == "alice-theirs@example.com"

    # Erasing again is harmless: nothing left, one more audit row. The audit survives.
    assert set((await erase(hub.url, tenant, "alice")).values()) == {0}
    async with sessions() as session:
        audits = list(
            await session.scalars(
                select(UserErasure)
                .where(UserErasure.tenant_id == tenant, UserErasure.user_id == "alice")
                .order_by(UserErasure.id)
            )
        )
    assert [a.requested_by for a in audits] == ["crm-module", "crm-module"]
    assert audits[0].counts == counts and set(audits[1].counts.values()) == {0}
    assert audits[0].requested_at <= audits[1].requested_at


async def _wait_disconnected(client: RecordingClient, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while client.namespace in client.client.namespaces:
            await asyncio.sleep(0.05)


async def test_erase_disconnects_the_users_sockets_on_every_node(
    hub_settings: SettingsFactory,
    serve_process: ServeStarter,
    sio_connect: SioConnect,
    legacy_connect: LegacyConnect,
    tenant: str,
) -> None:
    """Two serve processes sharing Redis: alice's /notifications and /chat sockets and her
    legacy WebSockets on both are closed by an erasure asked of one; bob's stay, and still
    get what is sent to him."""
    settings = own(hub_settings)
    node_a, node_b = await asyncio.gather(serve_process(settings), serve_process(settings))
    sockets: dict[tuple[str, str, str], RecordingClient] = {}
    for user in ("alice", "bob"):
        token = hs256_token(tenant=tenant, user=user)
        for name, node in (("a", node_a), ("b", node_b)):
            for namespace in (NOTIFICATIONS_NAMESPACE, CHAT_NAMESPACE):
                sockets[(user, name, namespace)] = await sio_connect(
                    node.url, namespace, token=token
                )
    legacy = {
        (user, node.url): await legacy_connect(
            node.url, tenant, user, hs256_token(tenant=tenant, user=user)
        )
        for user in ("alice", "bob")
        for node in (node_a, node_b)
    }
    await erase(node_a.url, tenant, "alice")
    for (user, _, _), client in sockets.items():
        if user == "alice":
            await _wait_disconnected(client)
    for (user, _), old in legacy.items():
        if user == "alice":
            assert old.reader is not None
            await asyncio.wait_for(old.reader, timeout=10)  # the server closed it
    await asyncio.sleep(0.5)  # time for a wrong disconnect of bob to show
    bobs = [client for (user, _, _), client in sockets.items() if user == "bob"]
    assert all(client.namespace in client.client.namespaces for client in bobs)
    assert all(not old.socket.closed for (user, _), old in legacy.items() if user == "bob")
    await ApiClient.for_service(node_b.url, tenant).notify(["bob"], title="still here")
    for (user, _, namespace), client in sockets.items():
        if user == "bob" and namespace == NOTIFICATIONS_NAMESPACE:
            (item,) = await client.wait_for("notification:new", timeout=10)
            assert item["title"] == "still here"
    for (user, _), old in legacy.items():
        if user == "bob":
            (item,) = await old.wait_for("notification:new", timeout=10)
            assert item["title"] == "still here"


async def test_erase_during_concurrent_creation_leaves_no_half_state(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, tenant: str
) -> None:
    """Notifications for alice (and her device's pushes) are created by many requests while
    she is erased: afterwards every notification left is whole (its push rows exist), her
    counter counts exactly the rows left, and seqs never repeat."""
    hub: RunningHub = await hub_factory(own(hub_settings))
    service = ApiClient.for_service(hub.url, tenant)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    assert (await alice.post("/api/devices/", {"kind": "fcm", "token": "t1"}))[0] == 201
    stop = asyncio.Event()
    created: list[str] = []

    async def create() -> None:
        while not stop.is_set():
            created.extend(await service.notify(["alice", "bob"], title=uuid.uuid4().hex))

    creators = [asyncio.create_task(create()) for _ in range(4)]
    await eventually(lambda: len(created) >= 40, timeout=20)
    counts = await erase(hub.url, tenant, "alice")
    after = len(created)
    await eventually(lambda: len(created) >= after + 40, timeout=20)
    stop.set()
    await asyncio.gather(*creators)
    assert counts["notifications"] >= 20 and counts["push_deliveries"] == counts["notifications"]

    sessions: async_sessionmaker[AsyncSession] = hub.app[DB_SESSIONS]
    async with sessions() as session:
        left = (
            await session.execute(
                select(Notification.id, Notification.seq).where(
                    Notification.tenant_id == tenant, Notification.user_id == "alice"
                )
            )
        ).all()
        pushes = set(
            await session.scalars(
                select(PushDelivery.notification_id).where(
                    PushDelivery.tenant_id == tenant, PushDelivery.user_id == "alice"
                )
            )
        )
        counter = (
            await session.execute(
                select(NotificationCounter.unread_count, NotificationCounter.last_seq).where(
                    NotificationCounter.tenant_id == tenant, NotificationCounter.user_id == "alice"
                )
            )
        ).one()
        bob_rows = await session.scalar(
            select(func.count()).where(
                Notification.tenant_id == tenant, Notification.user_id == "bob"
            )
        )
    # The device went with the erasure, so notifications made after it have no pushes, and
    # none made before it is left: no notification is left with a push but some without.
    assert pushes == set()
    assert counter.unread_count == len(left)
    # What is left is exactly the newest seqs: nothing older survived, nothing is missing.
    seqs = sorted(row.seq for row in left)
    assert seqs == list(range(counter.last_seq - len(left) + 1, counter.last_seq + 1))
    assert bob_rows == len(created) // 2
    # Every alice notification created is either erased or left, none lost in between.
    assert counts["notifications"] + len(left) == len(created) // 2


async def test_export_and_erase_on_the_embedded_profile(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    sio_connect: SioConnect,
    tmp_path: Path,
) -> None:
    """SQLite and the in-process bus: the same export, erasure and disconnects."""
    settings: Settings = hub_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        redis_url=None,
        auto_migrate=True,
        webhooks_allow_private=True,
    )
    hub: RunningHub = await hub_factory(settings)
    tenant = "t-embedded"
    setup = await populate(hub.url, tenant, tag="mine")
    document, headers = await export_of(hub.url, tenant, "alice")
    assert headers.get("Transfer-Encoding") == "chunked"
    assert all(document[kind] for kind in KINDS)
    token = hs256_token(tenant=tenant, user="alice")
    live = [
        await sio_connect(hub.url, namespace, token=token)
        for namespace in (NOTIFICATIONS_NAMESPACE, CHAT_NAMESPACE)
    ]
    bob = await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob"))
    counts = await erase(hub.url, tenant, "alice")
    assert counts["notifications"] == 2 and counts["webhook_deliveries"] == 4
    for client in live:
        await _wait_disconnected(client)
    assert bob.namespace in bob.client.namespaces
    _, history = await ApiClient.for_user(hub.url, tenant, "bob").get(
        f"/api/conversations/{setup['conversation_id']}/messages/"
    )
    assert [m["body"] for m in history["items"]] == ["hi alice mine", ""]
    sessions: async_sessionmaker[AsyncSession] = hub.app[DB_SESSIONS]
    async with sessions() as session:
        addresses = list(await session.scalars(select(Email.to_email)))
        audits = await session.scalar(select(func.count()).select_from(UserErasure))
    assert addresses == [""] and audits == 1


@pytest.mark.parametrize("path", ["/api/users/alice/export/", "/api/users/alice/"])
async def test_the_routes_are_documented(hub: RunningHub, path: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{hub.url}/api/openapi.json") as r:
        document = await r.json()
    template = path.replace("alice", "{user_id}")
    operations = document["paths"][template]
    assert all(op["x-role"] == "service" for op in operations.values())


# -- faults ------------------------------------------------------------------------------------


async def test_an_export_cut_by_a_database_outage_never_reads_as_a_whole_document(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    postgres_url: str,
    tcp_proxy: ProxyFactory,
    tenant: str,
) -> None:
    """The database goes away while an export streams: the response ends without the chunked
    terminator (the client gets a transfer error, and what came does not parse), and the next
    export is a 503 before any byte."""
    target = make_url(postgres_url)
    proxy = await tcp_proxy(target.host or "127.0.0.1", target.port or 5432)
    through_proxy = target.set(host="127.0.0.1", port=proxy.port)
    hub: RunningHub = await hub_factory(
        own(
            hub_settings,
            database_url=through_proxy.render_as_string(hide_password=False),
            database_connect_timeout_seconds=1.0,
        )
    )
    sessions: async_sessionmaker[AsyncSession] = hub.app[DB_SESSIONS]
    async with sessions() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO notifications (tenant_id, user_id, seq, title, body, data, "
                "created_at) SELECT :tenant, 'big', n, 'Deal ' || n, repeat('x', 200), "
                "CAST('{}' AS jsonb), now() FROM generate_series(1, 40000) AS n"
            ),
            {"tenant": tenant},
        )
    service = ApiClient.for_service(hub.url, tenant)
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{hub.url}/api/users/big/export/",
                headers={"Authorization": f"Bearer {service.token}"},
            ) as response,
        ):
            assert response.status == 200
            async for chunk, _ in response.content.iter_chunks():
                received += chunk
                if len(received) > 100_000 and proxy._server is not None:
                    await proxy.stop()  # the database is gone from here on
    assert 100_000 < len(received) < 18_000_000
    with pytest.raises(ValueError):
        json.loads(received)
    status, body = await service.get("/api/users/big/export/")
    assert (status, body["error"]["code"]) == (503, "unavailable")


async def test_an_erasure_stands_when_the_bus_is_away(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    private_redis: PrivateRedis,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis (the bus) is down when a user is erased: the erasure commits, answers 200 with
    its counts and its audit line, and says that the disconnect could not be published."""
    hub: RunningHub = await hub_factory(own(hub_settings, redis_url=private_redis.url))
    await ApiClient.for_service(hub.url, tenant).notify(["alice"], title="x")
    private_redis.kill()
    with caplog.at_level(logging.INFO):
        counts = await erase(hub.url, tenant, "alice")
    assert counts["notifications"] == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith(f"user erased: tenant={tenant} user=alice") for m in messages)
    assert any("did not take the disconnect" in m for m in messages)
    _, page = await ApiClient.for_user(hub.url, tenant, "alice").get("/api/notifications/")
    assert page["items"] == []


async def test_erase_reaches_digest_windows_and_scheduled_events(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, tenant: str
) -> None:
    """A scheduled event loses the erased recipient (a pending one is cancelled if she was
    the only one; an applied one keeps its status); her open digest window, with the email
    it would send, is deleted."""
    hub: RunningHub = await hub_factory(own(hub_settings))
    service = ApiClient.for_service(hub.url, tenant)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    part = {"title": "later", "body": "b"}
    alice = {"user_id": "alice", "email": "alice@example.com"}
    for event in (
        {"event_id": "s1", "send_at": later, "recipients": [alice, {"user_id": "carol"}]},
        {"event_id": "s2", "send_at": later, "recipients": [alice]},
        {
            "event_id": "d1",
            "digest": {"key": "deals", "window_seconds": 3600},
            "recipients": [alice],
            "email": {"template_key": "welcome", "context": {}},
        },
    ):
        body = {"tenant_id": tenant, "type": "t", "notification": part, **event}
        status, answer = await service.post("/api/events/", body)
        assert status == 202, answer
    sessions: async_sessionmaker[AsyncSession] = hub.app[DB_SESSIONS]
    # One applied already: its stored envelope still names her.
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        session.add(
            ScheduledEvent(
                tenant_id=tenant,
                event_id="s3",
                due_at=now,
                status="sent",
                document={"event_id": "s3", "recipients": [alice]},
                created_at=now,
                sent_at=now,
            )
        )
    counts = await erase(hub.url, tenant, "alice")
    assert (counts["scheduled_events"], counts["digest_windows"]) == (3, 1)
    async with sessions() as session:
        scheduled = {
            row.event_id: (row.status, row.document["recipients"])
            for row in await session.scalars(
                select(ScheduledEvent).where(ScheduledEvent.tenant_id == tenant)
            )
        }
        windows = await session.scalar(select(func.count()).where(DigestWindow.tenant_id == tenant))
    assert scheduled == {
        "s1": ("pending", [{"user_id": "carol"}]),
        "s2": ("cancelled", []),
        "s3": ("sent", []),
    }
    assert windows == 0
    assert set((await erase(hub.url, tenant, "alice")).values()) == {0}


async def test_export_has_the_pending_schedule_and_digest_windows_that_name_the_user(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, tenant: str
) -> None:
    """Only her own part of an event scheduled for her and for carol; her digest window with
    the email it will send; the email of an applied event names its notification."""
    hub: RunningHub = await hub_factory(own(hub_settings))
    service = ApiClient.for_service(hub.url, tenant)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    part = {"title": "later", "body": "b"}
    alice = {"user_id": "alice", "email": "alice@example.com"}
    carol = {"user_id": "carol", "email": "carol@example.com"}
    mail = {"template_key": "welcome", "context": {}}
    for event in (
        {"event_id": "s1", "send_at": later, "recipients": [carol, alice]},
        {"event_id": "s2", "send_at": later, "recipients": [carol]},
        {"event_id": "d1", "digest": {"key": "deals", "window_seconds": 3600}},
        {"event_id": "now", "email": mail},
    ):
        body = {"tenant_id": tenant, "type": "t", "notification": part, "recipients": [alice]}
        status, answer = await service.post("/api/events/", {**body, "email": mail, **event})
        assert status == 202, answer

    document, _ = await export_of(hub.url, tenant, "alice")
    UserExport.model_validate(document)
    (scheduled,) = document["scheduled_events"]
    assert scheduled["event_id"] == "s1" and scheduled["recipient"] == alice
    assert "carol" not in str(document)
    (window,) = document["digest_windows"]
    assert window["key"] == "deals" and window["count"] == 1
    assert window["email"]["to_email"] == "alice@example.com"
    notifications = {n["id"] for n in document["notifications"]}
    assert window["notification_id"] in notifications
    (email,) = document["emails"]  # the applied event's
    assert email["notification_id"] in notifications - {window["notification_id"]}
