"""Sockets live as long as their token: expiry disconnects, ``auth:refresh`` extends."""

from __future__ import annotations

import asyncio

import pytest

from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.legacy_ws import LegacyConnect
from tests.harness.tokens import hs256_token


@pytest.mark.parametrize("namespace", [NOTIFICATIONS_NAMESPACE, CHAT_NAMESPACE])
async def test_expired_socket_is_disconnected_and_a_refreshed_one_stays(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, namespace: str
) -> None:
    expiring = await sio_connect(
        hub.url, namespace, token=hs256_token(tenant=tenant, user="alice", ttl=3)
    )
    refreshed = await sio_connect(
        hub.url, namespace, token=hs256_token(tenant=tenant, user="alice", ttl=3)
    )
    ack = await refreshed.call("auth:refresh", {"token": hs256_token(tenant=tenant, user="alice")})
    assert ack["ok"] is True and ack["expires_at"] > 0
    await asyncio.sleep(4.0)
    assert not expiring.client.connected, "an expired socket stayed connected"
    assert refreshed.client.connected


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda tenant: hs256_token(tenant=tenant, user="mallory"), "forbidden"),
        (lambda tenant: hs256_token(tenant=tenant + "-other", user="alice"), "forbidden"),
        (lambda tenant: hs256_token(tenant=tenant, user="alice", ttl=-5), "unauthorized"),
        (lambda tenant: "garbage", "unauthorized"),
        (lambda tenant: None, "validation_error"),
    ],
)
async def test_refresh_must_be_a_valid_token_of_the_same_user(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, make_token: object, code: str
) -> None:
    client = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="alice", ttl=2)
    )
    ack = await client.call("auth:refresh", {"token": make_token(tenant)})  # type: ignore[operator]
    assert ack["ok"] is False and ack["error"]["code"] == code
    await asyncio.sleep(3.0)
    assert not client.client.connected, "a refused refresh must not extend the session"


async def test_legacy_websocket_closes_at_expiry(
    hub: RunningHub, tenant: str, legacy_connect: LegacyConnect
) -> None:
    legacy = await legacy_connect(
        hub.url, tenant, "alice", hs256_token(tenant=tenant, user="alice", ttl=2)
    )
    async with asyncio.timeout(6):
        await legacy.reader  # type: ignore[misc]
    assert legacy.socket.close_code == 4401
