"""The official JavaScript ``socket.io-client`` against the hub's ``/notifications`` namespace.

The client is ``tests/js/notifications_client.mjs`` run by Node; its dependencies come from
``npm ci --prefix tests/js``. Without them these tests fail (they never skip): a browser or
mobile client is what the contract is for, and python-socketio alone would hide framing bugs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.harness.hub import RunningHub
from tests.harness.tokens import hs256_token

JS_DIR = Path(__file__).parent / "js"
CLIENT_SCRIPT = JS_DIR / "notifications_client.mjs"
NPM_CI = "npm ci --prefix tests/js"
STEP_TIMEOUT = 15.0  # seconds; every wait on the Node process is bounded by this


def require_node_client(js_dir: Path = JS_DIR) -> str:
    """The ``node`` executable, after checking the client's npm dependencies are installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "Node.js is not on PATH; the JS client tests need Node 18+ and then "
            f"`{NPM_CI}` (run from the repository root).",
            pytrace=False,
        )
    if not (js_dir / "node_modules" / "socket.io-client" / "package.json").is_file():
        pytest.fail(
            f"{js_dir / 'node_modules'} is missing socket.io-client: run `{NPM_CI}` "
            "(from the repository root) before the tests.",
            pytrace=False,
        )
    return node


@dataclass
class NodeClient:
    """One running ``notifications_client.mjs``; see that file for the config and output."""

    process: asyncio.subprocess.Process
    config: dict[str, Any]

    async def _stderr(self) -> str:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")

    async def _line(self, what: str) -> str:
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                line = await self.process.stdout.readline()
        except TimeoutError:
            stderr = await self._stderr()
            raise AssertionError(
                f"node client: no {what} within {STEP_TIMEOUT}s; stderr:\n{stderr}"
            ) from None
        if not line:
            stderr = await self._stderr()
            raise AssertionError(
                f"node client exited (code {self.process.returncode}) before {what}; "
                f"stderr:\n{stderr}"
            )
        return line.decode().rstrip("\n")

    async def ready(self) -> None:
        """Wait for the ``READY`` line (``ready_after`` notifications have arrived)."""
        line = await self._line("READY line")
        if line != "READY":
            stderr = await self._stderr()
            raise AssertionError(f"expected READY, got {line!r}; stderr:\n{stderr}")

    async def go_on(self, **overrides: Any) -> None:
        """After ``READY``: send the one line of config overrides the client waits for."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(overrides).encode() + b"\n")
        await self.process.stdin.drain()

    async def result(self) -> dict[str, Any]:
        """The client's final JSON line, once it has exited with code 0."""
        line = await self._line("result line")
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                code = await self.process.wait()
        except TimeoutError:
            code = None
        result: dict[str, Any] = json.loads(line)
        if code != 0:
            stderr = await self._stderr()
            raise AssertionError(
                f"node client exit code {code}; result {result}; stderr:\n{stderr}"
            )
        return result


StartClient = Callable[..., Awaitable[NodeClient]]


@pytest.fixture
def node_executable() -> str:
    """Fails the test (never skips) when Node or the npm dependencies are missing."""
    return require_node_client()


@pytest.fixture
async def js_client(node_executable: str) -> AsyncIterator[StartClient]:
    """Start Node clients with a config (keyword arguments); every one is killed afterwards.

    List it before ``hub`` in a test's arguments so a missing ``node_modules`` fails the
    test before a hub is started.
    """
    node = node_executable
    started: list[NodeClient] = []

    async def start(**config: Any) -> NodeClient:
        config.setdefault("timeout_ms", int(STEP_TIMEOUT * 1000 * 2 / 3))
        process = await asyncio.create_subprocess_exec(
            node,
            str(CLIENT_SCRIPT),
            json.dumps(config),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = NodeClient(process=process, config=config)
        started.append(client)
        return client

    yield start
    for client in started:
        if client.process.returncode is None:
            client.process.kill()
            await client.process.wait()


@dataclass
class Tenant:
    """A fresh tenant with a service token and helpers to create notifications over REST."""

    hub: RunningHub
    id: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")

    def token(self, user: str) -> str:
        return hs256_token(tenant=self.id, user=user)

    async def notify(self, user: str, title: str, body: str = "") -> str:
        service = hs256_token(tenant=self.id, user="crm", roles=["service"])
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP_TIMEOUT)) as http,
            http.post(
                f"{self.hub.url}/api/notifications/",
                json={"user_ids": [user], "title": title, "body": body},
                headers={"Authorization": f"Bearer {service}"},
            ) as response,
        ):
            payload = await response.json()
            assert response.status == 201, payload
        (notification_id,) = payload["ids"]
        assert isinstance(notification_id, str)
        return notification_id


def assert_notifications(
    events: list[dict[str, Any]], tenant: Tenant, user: str, expected: list[tuple[int, str, str]]
) -> None:
    """``events`` are exactly ``expected`` (seq, id, title), in that order, all unread."""
    assert [(e["seq"], e["id"], e["title"]) for e in events] == expected
    for event in events:
        assert isinstance(event["seq"], int)
        assert event["tenant_id"] == tenant.id
        assert event["user_id"] == user
        assert event["read_at"] is None


async def test_replay_after_last_seq_then_live_then_mark_read_with_ack(
    js_client: StartClient, hub: RunningHub
) -> None:
    tenant, user = Tenant(hub), f"u-{uuid.uuid4().hex[:8]}"
    titles = ["first", 'Zürich ✓ 日本 \u2028 "quoted"', "third", "live one", "live two"]
    stored = [await tenant.notify(user, title) for title in titles[:3]]
    # Neither reaches the client: another user of the tenant, the same user id elsewhere.
    other_users = await tenant.notify(f"{user}-other", "not yours")
    await Tenant(hub).notify(user, "other tenant")

    client = await js_client(
        url=hub.url, token=tenant.token(user), last_seq=1, ready_after=2, expect=4
    )
    await client.ready()
    live = [await tenant.notify(user, title) for title in titles[3:]]
    ids = stored + live
    wanted = [ids[0], ids[1], ids[3], other_users, "999999999", "not-an-id"]
    await client.go_on(mark_read=wanted, expect_read=1, expect_updated=1)
    result = await client.result()

    assert "error" not in result, result
    assert_notifications(
        result["events"],
        tenant,
        user,
        [(seq, ids[seq - 1], titles[seq - 1]) for seq in range(2, 6)],
    )
    # seq 1 was never sent to this client but is the user's: it counts; the others do not.
    assert result["ack"] == {"ok": True, "updated": 3, "unread_count": 2}
    reads = [args for name, *args in result["others"] if name == "notification:read"]
    assert reads == [[{"ids": sorted([ids[0], ids[1], ids[3]], key=int), "unread_count": 2}]]
    # The replay ends with the counts; the read mark comes as notification:read and then
    # notification:updated.
    names = [name for name, *_ in result["others"]]
    assert names == ["notification:updated", "notification:read", "notification:updated"], names
    assert result["others"][0][1] == {
        "ids": [],
        "changes": {},
        "unread_count": 3,
        "unseen_count": 3,
    }
    assert result["others"][2][1]["ids"] == reads[0][0]["ids"]


async def test_full_replay_from_zero_in_seq_order(js_client: StartClient, hub: RunningHub) -> None:
    tenant, user = Tenant(hub), f"u-{uuid.uuid4().hex[:8]}"
    titles = ["a", "b", "c"]
    ids = [await tenant.notify(user, title) for title in titles]

    client = await js_client(
        url=hub.url, token=tenant.token(user), last_seq=0, expect=3, mark_read=ids
    )
    result = await client.result()

    assert "error" not in result, result
    assert_notifications(
        result["events"], tenant, user, [(seq, ids[seq - 1], titles[seq - 1]) for seq in (1, 2, 3)]
    )
    assert result["ack"] == {"ok": True, "updated": 3, "unread_count": 0}


async def test_without_last_seq_only_live_notifications_arrive(
    js_client: StartClient, hub: RunningHub
) -> None:
    tenant, user = Tenant(hub), f"u-{uuid.uuid4().hex[:8]}"
    await tenant.notify(user, "before")

    client = await js_client(url=hub.url, token=tenant.token(user), ready_after=0, expect=1)
    await client.ready()
    live = await tenant.notify(user, "after")
    await client.go_on()
    result = await client.result()

    assert "error" not in result, result
    assert_notifications(result["events"], tenant, user, [(2, live, "after")])
    assert result["others"] == []


def _expired_token(tenant: str) -> str:
    return hs256_token(
        tenant=tenant, user="u1", iat=int(time.time()) - 7200, exp=int(time.time()) - 3600
    )


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda tenant: "not-a-jwt", id="garbage"),
        pytest.param(
            lambda tenant: jwt.encode(
                {"sub": "u1", "tenant_id": tenant, "exp": int(time.time()) + 600},
                "another-secret-0123456789-0123456789",
                algorithm="HS256",
            ),
            id="wrong-key",
        ),
        pytest.param(_expired_token, id="expired"),
        pytest.param(lambda tenant: "", id="empty"),
    ],
)
async def test_bad_token_gets_connect_error_unauthorized(
    js_client: StartClient, hub: RunningHub, make_token: Callable[[str], str]
) -> None:
    client = await js_client(url=hub.url, token=make_token("t-x"), last_seq=0, expect=0)
    result = await client.result()

    assert "connect_error" in result, result
    error = result["connect_error"]
    assert error["message"] == "unauthorized"
    assert error["data"]["code"] == "unauthorized"
    assert isinstance(error["data"]["message"], str)


def test_missing_node_modules_fails_with_the_npm_command(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.fail("Node.js is not on PATH")
    with pytest.raises(pytest.fail.Exception, match=r"run `npm ci --prefix tests/js`"):
        require_node_client(tmp_path)


async def test_chat_message_with_ack_between_two_js_clients(
    node_executable: str, hub: RunningHub
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    config = {
        "url": hub.url,
        "sender_token": hs256_token(tenant=tenant, user="alice"),
        "recipient_token": hs256_token(tenant=tenant, user="bob"),
        "to_user_id": "bob",
        "body": 'héllo from JS \u2028 "quoted"',
    }
    process = await asyncio.create_subprocess_exec(
        node_executable,
        str(JS_DIR / "chat_client.mjs"),
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT)
    except TimeoutError:
        process.kill()
        raise
    assert process.returncode == 0, (stdout, stderr)
    # split on "\n" only: str.splitlines() would also split inside the U+2028 in the body
    result = json.loads(stdout.decode().strip().split("\n")[-1])
    ack = result["ack"]
    assert ack["ok"] is True
    message = ack["message"]
    assert (message["sender_id"], message["body"], message["client_msg_id"]) == (
        "alice",
        config["body"],
        "js-1",
    )
    assert result["sender_got"] == [message]
    assert result["recipient_got"] == [message]
