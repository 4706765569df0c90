"""PostgreSQL killed and restarted under traffic: 503 ``unavailable`` with Retry-After while
it is away (never a 500), one log line each way, and 2xx again within 1 s of its return."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.harness.hub import RunningHub, SettingsFactory, SioConnect
from tests.harness.postgres import PrivatePostgres
from tests.harness.tokens import hs256_token

HubFactory = Callable[..., Awaitable[RunningHub]]

OUTAGE_SECONDS = 2.0


@dataclass(frozen=True)
class Answer:
    at: float
    route: str
    status: int
    retry_after: str | None
    code: str | None


async def drive(
    http: aiohttp.ClientSession,
    url: str,
    method: str,
    headers: dict[str, str],
    answers: list[Answer],
    stop: asyncio.Event,
    body: dict[str, Any] | None = None,
) -> None:
    """Call one route in a loop until ``stop``; record every answer."""
    while not stop.is_set():
        async with http.request(method, url, json=body, headers=headers) as response:
            document = await response.json()
        code = document.get("error", {}).get("code") if isinstance(document, dict) else None
        answers.append(
            Answer(
                time.monotonic(),
                f"{method} {url.split('/api', 1)[1]}",
                response.status,
                response.headers.get("Retry-After"),
                code,
            )
        )
        await asyncio.sleep(0.005)


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "db.outage"]


async def test_rest_through_a_postgres_kill_and_restart(
    own_postgres: PrivatePostgres,
    hub_factory: HubFactory,
    hub_settings: SettingsFactory,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = await hub_factory(
        hub_settings(database_url=own_postgres.url, database_connect_timeout_seconds=1.0)
    )
    user = {"Authorization": f"Bearer {hs256_token(tenant=tenant, user='u-1')}"}
    service = {
        "Authorization": f"Bearer {hs256_token(tenant=tenant, user='crm', roles=['service'])}"
    }
    new = {"user_ids": ["u-1"], "title": "t", "body": "b"}
    answers: list[Answer] = []
    probes: list[int] = []
    stop = asyncio.Event()
    caplog.set_level(logging.INFO)

    async def probe(http: aiohttp.ClientSession) -> None:
        """What an orchestrator does: /readyz every 100 ms."""
        while not stop.is_set():
            async with http.get(f"{hub.url}/readyz") as response:
                probes.append(response.status)
            await asyncio.sleep(0.1)

    async with aiohttp.ClientSession() as http:
        api = f"{hub.url}/api"
        workers = [
            asyncio.create_task(
                drive(http, f"{api}/notifications/unread-count/", "GET", user, answers, stop)
            )
            for _ in range(3)
        ]
        workers += [
            asyncio.create_task(drive(http, f"{api}/notifications/", "GET", user, answers, stop)),
            asyncio.create_task(
                drive(http, f"{api}/notifications/", "POST", service, answers, stop, new)
            ),
            asyncio.create_task(
                drive(http, f"{api}/notifications/", "POST", service, answers, stop, new)
            ),
            asyncio.create_task(probe(http)),
        ]
        try:
            await asyncio.sleep(1.0)
            killed = time.monotonic()
            own_postgres.kill()
            await asyncio.sleep(OUTAGE_SECONDS)
            own_postgres.start()
            back = await own_postgres.wait_ready()
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await asyncio.gather(*workers)

    before = [a for a in answers if a.at < killed]
    during = [a for a in answers if killed <= a.at < back]
    after = [a for a in answers if a.at >= back]
    bad = [a for a in answers if not (200 <= a.status < 300 or a.status == 503)]
    assert not bad, bad[:5]
    assert before and all(200 <= a.status < 300 for a in before)
    refused = [a for a in answers if a.status == 503]
    assert len(refused) > 10, "the outage was seen"
    assert all(a.code == "unavailable" and a.retry_after for a in refused), refused[:5]
    first_ok = min(a.at for a in after if 200 <= a.status < 300)
    late = [a for a in after if a.at > back + 1.0 and not 200 <= a.status < 300]
    assert first_ok - back < 1.0
    assert not late, late[:5]
    print(
        f"\nanswers: {len(answers)}; outage (kill to accepting queries) {back - killed:.1f} s; "
        f"during it: {len(during)} "
        f"({sum(a.status == 503 for a in during)} x 503); "
        f"first 2xx {1000 * (first_ok - back):.0f} ms after the database accepted queries; "
        f"503 after its return: {sum(a.status == 503 for a in after)}"
    )

    lines = outage_lines(caplog)
    assert len(lines) == 2, lines
    assert "unavailable" in lines[0] and "available again" in lines[1]
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not tracebacks, [(r.name, r.getMessage()) for r in tracebacks][:5]
    # Readiness saw the outage, and said so once rather than on every probe.
    assert 503 in probes and probes[-1] == 200
    readiness = [r for r in caplog.records if "readiness check failed" in r.getMessage()]
    assert len(readiness) <= 1, [r.getMessage() for r in readiness]


async def test_socket_event_acks_unavailable_while_postgres_is_down(
    own_postgres: PrivatePostgres,
    hub_factory: HubFactory,
    hub_settings: SettingsFactory,
    sio_connect: SioConnect,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = await hub_factory(
        hub_settings(database_url=own_postgres.url, database_connect_timeout_seconds=1.0)
    )
    socket = await sio_connect(
        hub.url, "/notifications", token=hs256_token(tenant=tenant, user="u-1")
    )
    ack = await socket.call("notification:mark_read", {"all": True})
    assert ack["ok"] is True, ack

    own_postgres.kill()
    for _ in range(3):
        ack = await socket.call("notification:mark_read", {"all": True})
        assert ack["ok"] is False
        assert ack["error"]["code"] == "unavailable", ack
        assert ack["error"]["details"]["retry_after"] >= 1

    own_postgres.start()
    back = await own_postgres.wait_ready()
    while True:
        ack = await socket.call("notification:mark_read", {"all": True})
        if ack["ok"]:
            break
        assert ack["error"]["code"] == "unavailable", ack
        await asyncio.sleep(0.01)
    assert time.monotonic() - back < 1.0
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [(r.name, r.getMessage()) for r in tracebacks][:5]


async def test_a_database_that_never_answers_is_503_within_the_connect_timeout(
    hub_factory: HubFactory, hub_settings: SettingsFactory, tenant: str
) -> None:
    """A black hole (connections accepted, nothing said) must not hang requests."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    try:
        hub = await hub_factory(
            hub_settings(
                database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/none",
                database_connect_timeout_seconds=0.5,
            )
        )
        user = {"Authorization": f"Bearer {hs256_token(tenant=tenant, user='u-1')}"}
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.get(
                f"{hub.url}/api/notifications/unread-count/", headers=user
            ) as response:
                body = await response.json()
            took = time.monotonic() - started
        assert response.status == 503, body
        assert body["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"] == "1"
        assert took < 2.0
    finally:
        for writer in held:
            writer.close()
        hole.close()
        await hole.wait_closed()
