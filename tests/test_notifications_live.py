"""Live delivery on ``/notifications`` and the legacy WebSocket: order, replay, read sync."""

from __future__ import annotations

import asyncio

import pytest

from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import ConnectRefused, RunningHub, SioConnect
from tests.harness.legacy_ws import LegacyConnect
from tests.harness.tokens import hs256_token


async def test_live_notification_and_read_sync_across_tabs(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    token = hs256_token(tenant=tenant, user="alice")
    tab1 = await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=token)
    tab2 = await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=token)
    service = ApiClient.for_service(hub.url, tenant)
    ids = await service.notify(["alice"], title="first")
    ids += await service.notify(["alice"], title="second")
    for tab in (tab1, tab2):
        received = await tab.wait_for("notification:new", 2)
        assert [n["title"] for n in received] == ["first", "second"]
        assert [n["id"] for n in received] == ids

    ack = await tab1.call("notification:mark_read", {"ids": [ids[0]]})
    assert ack == {"ok": True, "updated": 1, "unread_count": 1}
    for tab in (tab1, tab2):
        (event,) = await tab.wait_for("notification:read")
        assert event == {"ids": [ids[0]], "unread_count": 1}

    # Marking over REST reaches the sockets too.
    await ApiClient.for_user(hub.url, tenant, "alice").post(
        "/api/notifications/mark-as-read/", {"all": True}
    )
    for tab in (tab1, tab2):
        events = await tab.wait_for("notification:read", 2)
        assert events[1] == {"all": True, "unread_count": 0}


@pytest.mark.parametrize(
    "payload", [None, "x", [1], {"ids": "1"}, {}, {"all": True, "ids": [1]}, {"ids": [[1]]}]
)
async def test_bad_mark_read_payload_is_an_error_ack_not_a_disconnect(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, payload: object
) -> None:
    client = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="u")
    )
    bystander = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="v")
    )
    ack = await client.call("notification:mark_read", payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "validation_error"
    assert client.client.connected and bystander.client.connected
    await ApiClient.for_service(hub.url, tenant).notify(["u", "v"])
    await client.wait_for("notification:new")
    await bystander.wait_for("notification:new")


@pytest.mark.parametrize("last_seq", [-1, "abc", 1.5, True, {"x": 1}])
async def test_bad_last_seq_is_refused(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, last_seq: object
) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await sio_connect(
            hub.url,
            NOTIFICATIONS_NAMESPACE,
            auth={"token": hs256_token(tenant=tenant, user="u"), "last_seq": last_seq},
        )
    assert refused.value.data["data"]["code"] == "bad_request"


async def test_replay_after_reconnect_is_complete_ordered_and_unique(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    """Disconnect, 500 notifications are created (some while reconnecting), reconnect with
    ``last_seq``: every one arrives exactly once, in order."""
    service = ApiClient.for_service(hub.url, tenant)
    token = hs256_token(tenant=tenant, user="bob")
    first = await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=token)
    await service.notify(["bob"], title="before")
    (seen,) = await first.wait_for("notification:new")
    last_seq = seen["seq"]
    await first.client.disconnect()

    for _ in range(400):
        await service.notify(["bob"])

    async def create_more() -> None:
        for _ in range(100):
            await service.notify(["bob"])
            await asyncio.sleep(0)

    creating = asyncio.create_task(create_more())
    await asyncio.sleep(0.05)  # some are created before, some during, some after the reconnect
    again = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, auth={"token": token, "last_seq": last_seq}
    )
    await creating
    received = await again.wait_for("notification:new", 500, timeout=30)
    await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive by now
    seqs = [n["seq"] for n in again.received("notification:new")]
    assert seqs == list(range(last_seq + 1, last_seq + 501))
    assert len(received) == 500


async def test_live_only_client_gets_nothing_old(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    await service.notify(["carol"], title="old")
    client = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="carol")
    )
    await service.notify(["carol"], title="new")
    (only,) = await client.wait_for("notification:new")
    await asyncio.sleep(0.2)
    assert [n["title"] for n in client.received("notification:new")] == ["new"]
    assert only["seq"] == 2


async def test_legacy_websocket_gets_the_same_events(
    hub: RunningHub, tenant: str, legacy_connect: LegacyConnect
) -> None:
    token = hs256_token(tenant=tenant, user="dora")
    legacy = await legacy_connect(hub.url, tenant, "dora", token)
    await asyncio.sleep(0.1)
    (created,) = await ApiClient.for_service(hub.url, tenant).notify(["dora"], title="hi")
    (frame,) = await legacy.wait_for("notification:new")
    assert (frame["id"], frame["title"], frame["seq"]) == (created, "hi", 1)
    await ApiClient.for_user(hub.url, tenant, "dora").post(
        "/api/notifications/mark-as-read/", {"ids": [created]}
    )
    (read,) = await legacy.wait_for("notification:read")
    assert read == {"ids": [created], "unread_count": 0}


async def test_legacy_websocket_replays_from_last_seq(
    hub: RunningHub, tenant: str, legacy_connect: LegacyConnect
) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    for i in range(3):
        await service.notify(["ed"], title=f"n{i}")
    legacy = await legacy_connect(
        hub.url, tenant, "ed", hs256_token(tenant=tenant, user="ed"), query="&last_seq=1"
    )
    frames = await legacy.wait_for("notification:new", 2)
    assert [f["seq"] for f in frames] == [2, 3]


async def test_legacy_websocket_refusals(
    hub: RunningHub, tenant: str, legacy_connect: LegacyConnect
) -> None:
    token = hs256_token(tenant=tenant, user="fay")
    cases = [
        (tenant, "fay", "not-a-token", 4401),
        (tenant, "fay", hs256_token(tenant=tenant, user="fay", ttl=-60), 4401),
        (tenant, "someone-else", token, 4403),
        ("other-tenant", "fay", token, 4403),
    ]
    for path_tenant, path_user, used_token, code in cases:
        client = await legacy_connect(hub.url, path_tenant, path_user, used_token)
        async with asyncio.timeout(5):
            await client.reader  # type: ignore[misc]
        assert client.socket.close_code == code, (path_tenant, path_user)
