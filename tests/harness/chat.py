"""Chat test setups more than one test needs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hub.realtime import CHAT_NAMESPACE
from tests.harness.hub import (
    RecordingClient,
    ServeProcess,
    ServeStarter,
    SettingsFactory,
    SioConnect,
)
from tests.harness.tokens import hs256_token


@dataclass
class TwoUsersTwoNodes:
    """Alice and bob with a device each on each of two ``serve`` processes."""

    nodes: tuple[ServeProcess, ServeProcess]
    alice_phone: RecordingClient  # node A
    alice_laptop: RecordingClient  # node B
    bob_phone: RecordingClient  # node A
    bob_laptop: RecordingClient  # node B

    @property
    def devices(self) -> tuple[RecordingClient, ...]:
        return (self.alice_phone, self.alice_laptop, self.bob_phone, self.bob_laptop)


async def two_users_on_two_nodes(
    hub_settings: SettingsFactory, serve_process: ServeStarter, sio_connect: SioConnect, tenant: str
) -> TwoUsersTwoNodes:
    node_a, node_b = await asyncio.gather(
        serve_process(hub_settings()), serve_process(hub_settings())
    )
    alice_token = hs256_token(tenant=tenant, user="alice")
    bob_token = hs256_token(tenant=tenant, user="bob")
    return TwoUsersTwoNodes(
        (node_a, node_b),
        await sio_connect(node_a.url, CHAT_NAMESPACE, token=alice_token),
        await sio_connect(node_b.url, CHAT_NAMESPACE, token=alice_token),
        await sio_connect(node_a.url, CHAT_NAMESPACE, token=bob_token),
        await sio_connect(node_b.url, CHAT_NAMESPACE, token=bob_token),
    )
