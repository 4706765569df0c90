"""The hub under test: in-process on a real loopback port, or as separate ``serve`` processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import socketio
from aiohttp import web
from pydantic import SecretStr

from hub.app import create_app
from hub.settings import Settings
from tests.harness.ports import free_port, wait_for_port_async
from tests.harness.processes import terminate_all
from tests.harness.tokens import TEST_JWT_SECRET, KeyPair

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def hub_settings(
    postgres_url: str, redis_url: str, socketio_channel: str, rsa_keys: KeyPair
) -> SettingsFactory:
    """Settings for a hub on the test services; keyword arguments override fields."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "database_url": postgres_url,
            "redis_url": redis_url,
            "socketio_channel": socketio_channel,
            "jwt_secret": TEST_JWT_SECRET,
            "jwt_algorithms": ["HS256", "RS256"],
            "jwt_public_key": rsa_keys.public_pem,
            "auto_migrate": False,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@dataclass
class RunningHub:
    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


async def start_hub(settings: Settings) -> RunningHub:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=2,
        # As hub.serve.run_server does: the header timeout (see Settings).
        keepalive_timeout=settings.http_header_timeout_seconds,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return RunningHub(url=f"http://127.0.0.1:{port}", app=app, runner=runner)


@pytest.fixture
async def hub_factory() -> AsyncIterator[Callable[[Settings], Awaitable[RunningHub]]]:
    """Start any number of in-process hubs; all are stopped after the test."""
    started: list[RunningHub] = []

    async def start(settings: Settings) -> RunningHub:
        running = await start_hub(settings)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        await running.runner.cleanup()


@pytest.fixture
async def hub(
    hub_factory: Callable[[Settings], Awaitable[RunningHub]], hub_settings: SettingsFactory
) -> RunningHub:
    """One hub on Postgres + Redis with the default test settings."""
    return await hub_factory(hub_settings())


@dataclass
class RecordingClient:
    """A python-socketio client that records every event it receives on its namespace."""

    client: socketio.AsyncClient
    namespace: str
    events: list[tuple[str, Any]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until ``count`` events named ``event`` have arrived; return them all."""
        async with asyncio.timeout(timeout):
            while len(self.received(event)) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received(event)

    async def call(self, event: str, data: Any = None, timeout: float = 5.0) -> Any:
        return await self.client.call(event, data, namespace=self.namespace, timeout=timeout)

    async def emit(self, event: str, data: Any = None) -> None:
        await self.client.emit(event, data, namespace=self.namespace)

    def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if len(args) == 1 else list(args)))
        self._arrived.set()


class ConnectRefused(Exception):
    """The server refused the Socket.IO connection; ``data`` is what it said why."""

    def __init__(self, message: str, data: Any) -> None:
        super().__init__(message)
        self.data = data


SioConnect = Callable[..., Awaitable[RecordingClient]]


@pytest.fixture
async def sio_connect() -> AsyncIterator[SioConnect]:
    """Connect real python-socketio clients; every one is disconnected after the test.

    Raises :class:`ConnectRefused` with the server's ``connect_error`` data when refused.
    """
    clients: list[socketio.AsyncClient] = []

    async def connect(
        url: str,
        namespace: str,
        *,
        token: str | None = None,
        auth: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        query: str = "",
        transports: list[str] | None = None,
    ) -> RecordingClient:
        client = socketio.AsyncClient(reconnection=False)
        clients.append(client)
        recording = RecordingClient(client=client, namespace=namespace)
        refusal: list[Any] = []
        client.on("*", recording._record, namespace=namespace)
        client.on("connect_error", lambda data=None: refusal.append(data), namespace=namespace)
        connect_auth = auth if auth is not None else ({"token": token} if token else None)
        try:
            await client.connect(
                url + query,
                namespaces=[namespace],
                auth=connect_auth,
                headers=headers or {},
                transports=transports or ["websocket"],
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError as exc:
            raise ConnectRefused(str(exc), refusal[0] if refusal else None) from exc
        return recording

    yield connect
    for client in clients:
        await close_client(client)


async def close_client(client: socketio.AsyncClient) -> None:
    """Disconnect ``client`` and close its HTTP session, also when the server had already
    ended the connection (the client library leaves the session open then)."""
    if client.connected:
        await client.disconnect()
    http = client.eio.http
    if http is not None and not http.closed:
        await http.close()


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``NOTIFYHUB_*`` variables that reproduce ``settings`` in a child process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        secret = getattr(settings, name)
        if isinstance(secret, SecretStr):
            text = secret.get_secret_value()
        elif isinstance(value, list):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        env[f"NOTIFYHUB_{name.upper()}"] = text
    return env


@dataclass
class ServeProcess:
    url: str
    process: subprocess.Popen[bytes]


ServeStarter = Callable[[Settings], Awaitable[ServeProcess]]


@pytest.fixture
async def serve_process() -> AsyncIterator[ServeStarter]:
    """Start ``python -m hub serve`` child processes; each gets SIGTERM after the test."""
    started: list[ServeProcess] = []

    async def start(settings: Settings) -> ServeProcess:
        port = free_port()
        env = {**os.environ, **settings_environment(settings), "NOTIFYHUB_PORT": str(port)}
        process = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
        )
        running = ServeProcess(url=f"http://127.0.0.1:{port}", process=process)
        started.append(running)
        await wait_for_port_async(port, timeout=20)
        return running

    yield start
    await terminate_all([running.process for running in started], wait=10)


@pytest.fixture
def tenant() -> str:
    """A tenant id of this test's own, so tests never see each other's data."""
    return f"t-{uuid.uuid4().hex[:10]}"
