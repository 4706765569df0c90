"""Several ``serve`` processes sharing Redis form one hub."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import ServeProcess, ServeStarter, SettingsFactory, SioConnect
from tests.harness.legacy_ws import LegacyConnect
from tests.harness.tokens import hs256_token


async def test_emit_on_process_a_reaches_client_on_process_b(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect
) -> None:
    node_a, node_b = await asyncio.gather(
        serve_process(hub_settings()), serve_process(hub_settings())
    )
    tenant, other_tenant = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    listener = await sio_connect(
        node_b.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="u1")
    )
    outsider = await sio_connect(
        node_b.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=other_tenant, user="u1")
    )
    service = hs256_token(tenant=tenant, user="crm", roles=["service"])
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{node_a.url}/api/broadcasts/",
            json={"title": "Maintenance", "body": "at noon", "data": {"k": 1}},
            headers={"Authorization": f"Bearer {service}"},
        ) as response,
    ):
        assert response.status == 202
    (received,) = await listener.wait_for("broadcast")
    assert received == {"title": "Maintenance", "body": "at noon", "data": {"k": 1}}
    await asyncio.sleep(0.2)
    assert outsider.received("broadcast") == [], "another tenant's socket got the broadcast"


@pytest.fixture
async def two_nodes(
    hub_settings: SettingsFactory, serve_process: ServeStarter
) -> tuple[ServeProcess, ServeProcess]:
    """Two ``serve`` processes on the same database and Redis: one hub."""
    node_a, node_b = await asyncio.gather(
        serve_process(hub_settings()), serve_process(hub_settings())
    )
    return node_a, node_b


async def test_notification_created_on_a_reaches_socketio_and_legacy_clients_on_b(
    two_nodes: tuple[ServeProcess, ServeProcess],
    sio_connect: SioConnect,
    legacy_connect: LegacyConnect,
) -> None:
    node_a, node_b = two_nodes
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token = hs256_token(tenant=tenant, user="u1")
    client = await sio_connect(node_b.url, NOTIFICATIONS_NAMESPACE, token=token)
    legacy = await legacy_connect(node_b.url, tenant, "u1", token)
    await asyncio.sleep(0.1)
    (created,) = await ApiClient.for_service(node_a.url, tenant).notify(["u1"], title="cross")
    (live,) = await client.wait_for("notification:new")
    (frame,) = await legacy.wait_for("notification:new")
    assert live["id"] == frame["id"] == created
    # A mark-read on node A reaches both too.
    await ApiClient.for_user(node_a.url, tenant, "u1").post(
        "/api/notifications/mark-as-read/", {"ids": [created]}
    )
    assert (await client.wait_for("notification:read"))[0]["unread_count"] == 0
    assert (await legacy.wait_for("notification:read"))[0]["ids"] == [created]


async def test_preferences_updated_reaches_every_socket_of_the_user_on_every_node(
    two_nodes: tuple[ServeProcess, ServeProcess],
    sio_connect: SioConnect,
    legacy_connect: LegacyConnect,
    tenant: str,
) -> None:
    """On both nodes, only that user's sockets (not a namesake of another tenant) and never
    a legacy WebSocket, which keeps the v1 events."""
    token = hs256_token(tenant=tenant, user="u1")
    node_a, node_b = two_nodes
    on_a = await sio_connect(node_a.url, NOTIFICATIONS_NAMESPACE, token=token)
    on_b = await sio_connect(node_b.url, NOTIFICATIONS_NAMESPACE, token=token)
    other_user = await sio_connect(
        node_b.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="u2")
    )
    same_id_other_tenant = await sio_connect(
        node_b.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant + "x", user="u1")
    )
    legacy = await legacy_connect(node_b.url, tenant, "u1", token)
    await asyncio.sleep(0.1)
    status, effective = await ApiClient.for_user(node_a.url, tenant, "u1").request(
        "PATCH", "/api/preferences/", json={"categories": {"deals": {"email": False}}}
    )
    assert status == 200
    assert (await on_a.wait_for("preferences:updated")) == [effective]
    assert (await on_b.wait_for("preferences:updated")) == [effective]
    # A notification afterwards still arrives in order on the legacy socket, which does not
    # get the v2 event.
    await ApiClient.for_service(node_a.url, tenant).notify(["u1"], title="after")
    await legacy.wait_for("notification:new")
    await on_b.wait_for("notification:new")
    assert legacy.of_type("preferences:updated") == []
    assert other_user.received("preferences:updated") == []
    assert same_id_other_tenant.received("preferences:updated") == []
