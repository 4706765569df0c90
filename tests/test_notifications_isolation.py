"""Tenant isolation: the same user id in tenants A and B never sees the other's data."""

from __future__ import annotations

import asyncio
import uuid

from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.legacy_ws import LegacyConnect
from tests.harness.tokens import hs256_token


async def test_same_user_id_in_two_tenants_is_two_people(
    hub: RunningHub, sio_connect: SioConnect, legacy_connect: LegacyConnect
) -> None:
    tenant_a, tenant_b = f"A-{uuid.uuid4().hex[:8]}", f"B-{uuid.uuid4().hex[:8]}"
    user = "same-user"
    socket_a = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant_a, user=user)
    )
    replaying_a = await sio_connect(
        hub.url,
        NOTIFICATIONS_NAMESPACE,
        auth={"token": hs256_token(tenant=tenant_a, user=user), "last_seq": 0},
    )
    legacy_a = await legacy_connect(
        hub.url, tenant_a, user, hs256_token(tenant=tenant_a, user=user)
    )
    socket_b = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant_b, user=user)
    )
    await asyncio.sleep(0.1)

    b_ids = await ApiClient.for_service(hub.url, tenant_b).notify([user], title="for B")
    await ApiClient.for_service(hub.url, tenant_b).notify([user], title="for B again")
    await socket_b.wait_for("notification:new", 2)

    a = ApiClient.for_user(hub.url, tenant_a, user)
    status, page = await a.get("/api/notifications/")
    assert (status, page["items"], page["unread_count"]) == (200, [], 0)
    assert (await a.get("/api/notifications/unread-count/"))[1]["unread_count"] == 0
    # Marking B's ids from A changes nothing and reveals nothing.
    assert (await a.post("/api/notifications/mark-as-read/", {"ids": b_ids}))[1] == {
        "updated": 0,
        "unread_count": 0,
        "unseen_count": 0,
    }
    assert await socket_a.call("notification:mark_read", {"ids": b_ids}) == {
        "ok": True,
        "updated": 0,
        "unread_count": 0,
    }
    assert await socket_a.call("notification:mark_read", {"all": True}) == {
        "ok": True,
        "updated": 0,
        "unread_count": 0,
    }
    b = ApiClient.for_user(hub.url, tenant_b, user)
    assert (await b.get("/api/notifications/unread-count/"))[1]["unread_count"] == 2

    # A's own notification arrives at A only; B's never did.
    (a_id,) = await ApiClient.for_service(hub.url, tenant_a).notify([user], title="for A")
    for client in (socket_a, replaying_a):
        (only,) = await client.wait_for("notification:new")
        assert only["id"] == a_id
    (frame,) = await legacy_a.wait_for("notification:new")
    assert frame["id"] == a_id
    await asyncio.sleep(0.2)
    assert [n["tenant_id"] for n in socket_b.received("notification:new")] == [tenant_b, tenant_b]
    assert len(socket_a.received("notification:new")) == 1
    assert len(replaying_a.received("notification:new")) == 1
    assert all(f["data"].get("tenant_id", tenant_a) == tenant_a for f in legacy_a.frames)
    # A's "mark all" events never reached B.
    assert socket_b.received("notification:read") == []


async def test_service_token_addresses_only_its_own_tenant(hub: RunningHub) -> None:
    tenant_a, tenant_b = f"A-{uuid.uuid4().hex[:8]}", f"B-{uuid.uuid4().hex[:8]}"
    # Whatever the body says, the tenant is the token's.
    status, _ = await ApiClient.for_service(hub.url, tenant_a).post(
        "/api/notifications/",
        {"user_ids": ["u"], "title": "t", "body": "b"},
    )
    assert status == 201
    assert (await ApiClient.for_user(hub.url, tenant_b, "u").get("/api/notifications/"))[1][
        "items"
    ] == []
    status, _ = await ApiClient.for_service(hub.url, tenant_a).post(
        "/api/notifications/",
        {"user_ids": ["u"], "title": "t", "body": "b", "tenant_id": tenant_b},
    )
    assert status == 400, "a tenant_id in the body is refused, not silently used"
