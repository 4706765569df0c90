"""SIGTERM: ``serve`` ends every connection at once and exits within seconds, however many
sockets it holds; clients reconnect to another node with ``last_seq`` and lose nothing."""

from __future__ import annotations

import asyncio
import signal
import time

from tests.harness.api import ApiClient
from tests.harness.failover import FailoverClient
from tests.harness.hub import ServeStarter, SettingsFactory
from tests.harness.rawws import RawWebSocket, connect_socketio
from tests.harness.tokens import hs256_token

IDLE_SOCKETS = 1000
USERS = 5
ROUNDS = 60


async def test_sigterm_with_a_thousand_sockets_exits_fast_and_loses_nothing(
    serve_process: ServeStarter, hub_settings: SettingsFactory, tenant: str
) -> None:
    settings = hub_settings()
    node_a, node_b = await serve_process(settings), await serve_process(settings)
    port_a = int(node_a.url.rsplit(":", 1)[1])
    idle = []
    for start in range(0, IDLE_SOCKETS, 100):
        idle += await asyncio.gather(
            *(
                connect_socketio(port_a, "/notifications", hs256_token(tenant=tenant, user=f"i{i}"))
                for i in range(start, start + 100)
            )
        )
    # Legacy WebSockets that never answer a close handshake either.
    for i in range(50):
        token = hs256_token(tenant=tenant, user=f"l{i}")
        idle.append(
            await RawWebSocket.connect(port_a, f"/ws/notifications/{tenant}/l{i}/?token={token}")
        )
    clients = [
        FailoverClient(hs256_token(tenant=tenant, user=f"u{i}"), node_b.url) for i in range(USERS)
    ]
    for client in clients:
        await client.connect(node_a.url)
    service = ApiClient.for_service(node_b.url, tenant)
    users = [f"u{i}" for i in range(USERS)]

    async def produce() -> None:
        for i in range(ROUNDS):
            await service.notify(users, title=f"n{i}")
            await asyncio.sleep(0.02)

    producing = asyncio.create_task(produce())
    await asyncio.sleep(0.4)
    started = time.monotonic()
    node_a.process.send_signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(node_a.process.wait, 30)
    took = time.monotonic() - started
    assert exit_code == 0
    assert took < 5.0, f"serve took {took:.1f}s to exit with {IDLE_SOCKETS} sockets"
    await producing
    for client in clients:
        await asyncio.wait_for(client.resumed.wait(), 10)
        # Not "io server disconnect", after which Socket.IO clients would not reconnect.
        assert client.reason in ("transport close", "transport error")
    async with asyncio.timeout(10):
        while any(len(client.seqs) < ROUNDS for client in clients):
            await asyncio.sleep(0.05)
    for client in clients:
        assert client.seqs == list(range(1, ROUNDS + 1))
        await client.close()
    for socket in idle:
        socket.close()
