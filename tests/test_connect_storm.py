"""Health probes stay fast while thousands of sockets connect at once: the admin port has an
accept queue of its own, and the collector's full passes stay out of the storm."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp

from tests.harness.hub import ServeStarter, SettingsFactory
from tests.harness.ports import free_port
from tests.harness.rawws import connect_socketio
from tests.harness.tokens import hs256_token

SOCKETS = 5000
CONCURRENT_CONNECTS = 500

# Probes from a process of its own, each on a new connection, as an orchestrator does, from
# the moment it starts until a line arrives on its stdin (the end of the storm).
PROBE = """
import http.client, json, select, sys, time
port = int(sys.argv[1])
took = []
while not select.select([sys.stdin], [], [], 0)[0]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/healthz")
    status = connection.getresponse().status
    connection.close()
    took.append((time.perf_counter() - started) * 1000 if status == 200 else 1e6)
    time.sleep(0.01)
took.sort()
print(json.dumps({"count": len(took), "p99_ms": took[int(len(took) * 0.99)], "max_ms": took[-1]}))
"""


async def test_healthz_answers_fast_during_a_connect_storm(
    serve_process: ServeStarter, hub_settings: SettingsFactory, tenant: str
) -> None:
    admin_port = free_port()
    node = await serve_process(hub_settings(admin_port=admin_port))
    port = int(node.url.rsplit(":", 1)[1])
    probing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        str(admin_port),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    await asyncio.sleep(0.2)  # the probe is up and probing before the storm starts
    gate = asyncio.Semaphore(CONCURRENT_CONNECTS)

    async def connect(i: int) -> object:
        async with gate:
            return await connect_socketio(
                port, "/notifications", hs256_token(tenant=tenant, user=f"u{i}")
            )

    sockets = await asyncio.gather(*(connect(i) for i in range(SOCKETS)))
    report = json.loads((await probing.communicate(b"stop\n"))[0])
    assert report["count"] > 50  # probes taken during the storm, not after it
    assert report["p99_ms"] < 100, report
    for socket in sockets:
        socket.close()  # type: ignore[attr-defined]


async def test_admin_port_serves_only_probes_and_metrics(
    serve_process: ServeStarter, hub_settings: SettingsFactory
) -> None:
    admin_port = free_port()
    await serve_process(hub_settings(admin_port=admin_port))
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(f"http://127.0.0.1:{admin_port}{path}") as response:
                assert response.status == 200, path
        async with http.get(f"http://127.0.0.1:{admin_port}/api/notifications/") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
