"""A client that stops reading never delays anybody else, and cannot grow the process:
past the per-socket buffer limit it is disconnected and counted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hub.metrics import SLOW_CONSUMERS
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory, SioConnect
from tests.harness.legacy_ws import LegacyConnect
from tests.harness.rawws import RawWebSocket, connect_socketio
from tests.harness.tokens import hs256_token

HubFactory = Callable[..., Awaitable[RunningHub]]
BUFFER_LIMIT = 256 * 1024
# A frame of ~20 KB. The kernel absorbs up to ~4 MB per stalled loopback socket (its
# send buffer grows to tcp_wmem's maximum) before the hub's own buffer starts to fill.
BIG_DATA = {"blob": "x" * 15_000}
BIG_BODY = "y" * 5_000


def dropped(transport: str) -> float:
    return SLOW_CONSUMERS.labels(transport)._value.get()


async def test_stalled_sockets_do_not_hold_up_a_broadcast_storm(
    hub_factory: HubFactory, hub_settings: SettingsFactory, sio_connect: SioConnect, tenant: str
) -> None:
    hub = await hub_factory(hub_settings(socket_max_buffer_bytes=BUFFER_LIMIT))
    readers = [
        await sio_connect(hub.url, "/notifications", token=hs256_token(tenant=tenant, user=f"r{i}"))
        for i in range(10)
    ]
    stalled = [
        await connect_socketio(
            hub.port,
            "/notifications",
            hs256_token(tenant=tenant, user=f"s{i}"),
            receive_buffer=4096,
        )
        for i in range(5)
    ]
    before = dropped("websocket")
    service = ApiClient.for_service(hub.url, tenant)
    rounds = 400  # ~8 MB per socket: past the kernel's buffers and the hub's limit
    for i in range(rounds):
        status, body = await service.post(
            "/api/broadcasts/", {"title": f"b{i}", "body": BIG_BODY, "data": BIG_DATA}
        )
        assert status == 202, body
    for reader in readers:
        received = await reader.wait_for("broadcast", rounds, timeout=30)
        assert [item["title"] for item in received] == [f"b{i}" for i in range(rounds)]
    assert dropped("websocket") == before + len(stalled)
    for socket in stalled:
        assert await socket.closed_by_server(timeout=5)


async def test_stalled_socket_does_not_delay_its_own_users_other_devices(
    hub_factory: HubFactory, hub_settings: SettingsFactory, sio_connect: SioConnect, tenant: str
) -> None:
    hub = await hub_factory(hub_settings(socket_max_buffer_bytes=BUFFER_LIMIT))
    token = hs256_token(tenant=tenant, user="u1")
    stalled = await connect_socketio(hub.port, "/notifications", token, receive_buffer=4096)
    reader = await sio_connect(hub.url, "/notifications", token=token)
    service = ApiClient.for_service(hub.url, tenant)
    for i in range(300):
        await service.notify(["u1"], title=f"n{i}", data=BIG_DATA)
    received = await reader.wait_for("notification:new", 300, timeout=30)
    assert [item["seq"] for item in received] == list(range(1, 301))
    assert await stalled.closed_by_server(timeout=5)


async def test_stalled_legacy_websocket_is_dropped_at_the_limit(
    hub_factory: HubFactory,
    hub_settings: SettingsFactory,
    legacy_connect: LegacyConnect,
    tenant: str,
) -> None:
    hub = await hub_factory(hub_settings(socket_max_buffer_bytes=BUFFER_LIMIT))
    token = hs256_token(tenant=tenant, user="u1")
    path = f"/ws/notifications/{tenant}/u1/?token={token}"
    stalled = await RawWebSocket.connect(hub.port, path, receive_buffer=4096)
    reader = await legacy_connect(hub.url, tenant, "u1", token)
    before = dropped("legacy_websocket")
    service = ApiClient.for_service(hub.url, tenant)
    for i in range(300):
        await service.notify(["u1"], title=f"n{i}", data=BIG_DATA)
    received = await reader.wait_for("notification:new", 300, timeout=30)
    assert [item["seq"] for item in received] == list(range(1, 301))
    assert dropped("legacy_websocket") == before + 1
    assert await stalled.closed_by_server(timeout=5)


async def test_buffer_limit_leaves_a_reading_client_alone(
    hub_factory: HubFactory, hub_settings: SettingsFactory, sio_connect: SioConnect, tenant: str
) -> None:
    """A client that reads, however much it is sent, is never mistaken for a slow one."""
    hub = await hub_factory(hub_settings(socket_max_buffer_bytes=64 * 1024))
    reader = await sio_connect(
        hub.url, "/notifications", token=hs256_token(tenant=tenant, user="u")
    )
    before = dropped("websocket")
    service = ApiClient.for_service(hub.url, tenant)
    await asyncio.gather(
        *(
            service.post("/api/broadcasts/", {"title": f"b{i}", "body": BIG_BODY, "data": BIG_DATA})
            for i in range(40)
        )
    )
    await reader.wait_for("broadcast", 40, timeout=10)
    assert dropped("websocket") == before
    assert reader.client.connected
