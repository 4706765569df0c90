"""Frames no Socket.IO library sends: reserved event names, wrong shapes, garbage. Each gets
an error ack or a disconnect, at most one log line per socket, and never a traceback."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from hub.metrics import SOCKETS_CONNECTED
from hub.sockets.transport import PROTOCOL_LOG
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub
from tests.harness.rawws import RawWebSocket, connect_socketio
from tests.harness.tokens import hs256_token


@pytest.fixture(autouse=True)
def _fresh_protocol_log() -> None:
    """The one-line-per-socket-per-minute memory is process-wide; each test starts empty."""
    PROTOCOL_LOG._last.clear()


async def ack(ws: RawWebSocket, namespace: str, ack_id: int, event: list[object]) -> object:
    ws.send_text(f"42{namespace},{ack_id}" + orjson.dumps(event).decode())
    prefix = f"43{namespace},{ack_id}"
    while True:
        frame = await ws.read_text()
        assert frame is not None, "closed instead of answering"
        if frame.startswith(prefix):
            return orjson.loads(frame[len(prefix) :])[0]


def server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # asyncio's own lines here come from the garbage collector finalising what earlier
    # tests left behind, whenever it happens to run: not from this test's frames.
    return [r for r in caplog.records if r.name != "asyncio"]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r for r in server_records(caplog) if r.exc_info] == []
    assert not [r for r in server_records(caplog) if "Traceback" in r.getMessage()]


def connected_gauge(namespace: str) -> float:
    return SOCKETS_CONNECTED.labels(namespace)._value.get()


@pytest.mark.parametrize("event", ["connect", "disconnect", "connect_error"])
async def test_reserved_event_names_are_refused(
    hub: RunningHub, tenant: str, event: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = await connect_socketio(hub.port, "/chat", hs256_token(tenant=tenant, user="u"))
    reply = await ack(ws, "/chat", 7, [event, {}, {"token": hs256_token(tenant=tenant, user="x")}])
    assert reply == {
        "ok": False,
        "error": {"code": "bad_request", "message": f"event name {event!r} is reserved"},
    }
    # Still connected, as itself: the handlers did not run.
    reply = await ack(ws, "/chat", 8, ["typing", {"conversation_id": 1, "typing": True}])
    assert reply["error"]["code"] == "not_found"  # type: ignore[index]
    no_tracebacks(caplog)


async def test_fake_disconnect_does_not_outlive_the_token(hub: RunningHub, tenant: str) -> None:
    """Sending ``["disconnect"]`` used to cancel the expiry timer: the socket lived on."""
    ws = await connect_socketio(hub.port, "/chat", hs256_token(tenant=tenant, user="u", ttl=2))
    reply = await ack(ws, "/chat", 1, ["disconnect"])
    assert reply["error"]["code"] == "bad_request"  # type: ignore[index]
    frames = []
    async with asyncio.timeout(8):
        while (frame := await ws.read_text(timeout=8)) is not None:
            frames.append(frame)
            if frame.startswith("41/chat"):
                break
    assert any(frame.startswith("41/chat") for frame in frames) or frame is None


async def test_fake_connect_delivers_once_and_leaks_nothing(hub: RunningHub, tenant: str) -> None:
    before = connected_gauge("/notifications")
    token = hs256_token(tenant=tenant, user="u")
    ws = await connect_socketio(hub.port, "/notifications", token)
    for ack_id in (1, 2):
        reply = await ack(ws, "/notifications", ack_id, ["connect", {}, {"token": token}])
        assert reply["error"]["code"] == "bad_request"  # type: ignore[index]
    await ApiClient.for_service(hub.url, tenant).notify(["u"], title="once")
    delivered = []
    while len(delivered) < 1:
        frame = await ws.read_text()
        assert frame is not None
        if frame.startswith('42/notifications,["notification:new"'):
            delivered.append(frame)
    # Nothing more arrives for that notification.
    with pytest.raises(TimeoutError):
        while True:
            frame = await ws.read_text(timeout=0.5)
            assert frame is None or not frame.startswith('42/notifications,["notification:new"')
    ws.close()
    async with asyncio.timeout(5):
        while connected_gauge("/notifications") != before:
            await asyncio.sleep(0.02)


async def test_second_connect_packet_closes_the_session(hub: RunningHub, tenant: str) -> None:
    before = connected_gauge("/notifications")
    token = hs256_token(tenant=tenant, user="u")
    ws = await connect_socketio(hub.port, "/notifications", token)
    other = hs256_token(tenant=tenant, user="someone-else")
    ws.send_text("40/notifications," + orjson.dumps({"token": other}).decode())
    assert await ws.closed_by_server(timeout=5)
    async with asyncio.timeout(5):
        while connected_gauge("/notifications") != before:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ([7, {}], "an event is [name, payload] with a string name"),
        ([], "an event is [name, payload] with a string name"),
        (["notification:mark_read", {"all": True}, 1, 2], "an event carries one payload"),
    ],
)
async def test_misshapen_events_get_an_error_ack(
    hub: RunningHub,
    tenant: str,
    event: list[object],
    problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws = await connect_socketio(hub.port, "/notifications", hs256_token(tenant=tenant, user="u"))
    reply = await ack(ws, "/notifications", 3, event)
    assert reply == {"ok": False, "error": {"code": "bad_request", "message": problem}}
    reply = await ack(ws, "/notifications", 4, ["notification:mark_read", {"all": True}])
    assert reply["ok"] is True  # type: ignore[index]
    no_tracebacks(caplog)


async def test_malformed_packets_disconnect_with_one_log_line(
    hub: RunningHub, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sockets = [
        await connect_socketio(hub.port, "/notifications", hs256_token(tenant=tenant, user=f"u{i}"))
        for i in range(3)
    ]
    for ws in sockets:
        for _ in range(200):
            ws.send_text('42/notifications,["notification:mark_read", {{{')
    for ws in sockets:
        assert await ws.closed_by_server(timeout=5)
    violations = [r for r in caplog.records if "protocol violation" in r.getMessage()]
    assert 1 <= len(violations) <= len(sockets)
    no_tracebacks(caplog)


@pytest.mark.parametrize("frame", ["hello", "", "9", "4"])
async def test_garbage_engineio_frames_close_without_a_traceback(
    hub: RunningHub, tenant: str, frame: str, caplog: pytest.LogCaptureFixture
) -> None:
    ws = await connect_socketio(hub.port, "/notifications", hs256_token(tenant=tenant, user="u"))
    ws.send_text(frame)
    ws.send_text("4")  # a MESSAGE with an empty Socket.IO packet
    assert await ws.closed_by_server(timeout=5)
    no_tracebacks(caplog)
    assert not [r for r in server_records(caplog) if r.levelno >= logging.ERROR]


async def test_the_default_namespace_is_refused(hub: RunningHub) -> None:
    ws = await RawWebSocket.connect(hub.port, "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.read_text() or "").startswith("0")
    ws.send_text("40")
    refusal = orjson.loads((await ws.read_text() or "")[2:])
    assert refusal["data"]["code"] == "not_found"
    ws.close()


async def test_non_ascii_digits_are_refused_not_a_500(hub: RunningHub, tenant: str) -> None:
    """ "²" passes str.isdigit() and then fails int(): every id parser must refuse it."""
    import base64

    cursor = base64.urlsafe_b64encode("n1:²".encode()).decode().rstrip("=")
    user = ApiClient.for_user(hub.url, tenant, "u")
    status, body = await user.get("/api/notifications/", cursor=cursor)
    assert (status, body["error"]["code"]) == (400, "invalid_cursor")
    status, body = await user.get("/api/conversations/²/messages/")
    assert status == 404
    ws = await RawWebSocket.connect(hub.port, "/socket.io/?EIO=4&transport=websocket")
    assert (await ws.read_text() or "").startswith("0")
    token = hs256_token(tenant=tenant, user="u")
    ws.send_text("40/notifications," + orjson.dumps({"token": token, "last_seq": "²"}).decode())
    refusal = orjson.loads((await ws.read_text() or "")[len("44/notifications,") :])
    assert refusal["data"]["code"] == "bad_request"
    ws.close()
