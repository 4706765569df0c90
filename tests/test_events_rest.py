"""``POST /api/events/``: the intake envelope over REST, applied once per event id."""

from __future__ import annotations

from typing import Any

import pytest

from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.tokens import hs256_token


def envelope(tenant: str, event_id: str, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": event_id,
        "tenant_id": tenant,
        "type": "deal.won",
        "occurred_at": "2026-11-29T08:00:00Z",
        "recipients": [{"user_id": "alice"}, {"user_id": "bob"}, {"user_id": "alice"}],
        "notification": {"title": "Deal won", "body": "ACME signed", "data": {"deal": 7}},
        "some_future_field": {"ignored": True},
    }
    event.update(changes)
    return event


async def test_event_applies_once_and_emits(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    client = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    service = ApiClient.for_service(hub.url, tenant)
    assert await service.post("/api/events/", envelope(tenant, "e-1")) == (
        202,
        {"event_id": "e-1", "duplicate": False},
    )
    assert await service.post("/api/events/", envelope(tenant, "e-1")) == (
        202,
        {"event_id": "e-1", "duplicate": True},
    )
    (live,) = await client.wait_for("notification:new")
    assert (live["title"], live["data"], live["seq"]) == ("Deal won", {"deal": 7}, 1)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    assert (await alice.get("/api/notifications/unread-count/"))[1]["unread_count"] == 1
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    assert (await bob.get("/api/notifications/unread-count/"))[1]["unread_count"] == 1


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"recipients": []}, 400),
        ({"type": ""}, 400),
        ({"notification": {"title": "t" * 201}}, 400),
        ({"recipients": [{"user_id": "a", "email": "not an address"}]}, 400),
        ({"tenant_id": "someone-else"}, 403),
    ],
)
async def test_bad_events_are_refused(
    hub: RunningHub, tenant: str, change: dict[str, Any], status: int
) -> None:
    got, body = await ApiClient.for_service(hub.url, tenant).post(
        "/api/events/", envelope(tenant, "bad", **change)
    )
    assert got == status, body
    assert body["error"]["message"]


async def test_events_need_the_service_role(hub: RunningHub, tenant: str) -> None:
    status, _ = await ApiClient.for_user(hub.url, tenant, "alice").post(
        "/api/events/", envelope(tenant, "e-2")
    )
    assert status == 403


async def test_nul_characters_are_refused_not_a_500(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    for body in (
        envelope(tenant, "nul-1", notification={"title": "bad\x00title"}),
        envelope(tenant, "nul\x00id"),
        envelope(tenant, "nul-2", recipients=[{"user_id": "a\x00b"}]),
    ):
        status, answer = await service.post("/api/events/", body)
        assert status == 400, answer
    for path, body in (
        ("/api/notifications/", {"user_ids": ["u"], "title": "t", "body": "\x00"}),
        ("/api/notifications/", {"user_ids": ["u\x00"], "title": "t", "body": "b"}),
        (
            "/api/notifications/",
            {"user_ids": ["u"], "title": "t", "body": "b", "data": {"k": "\x00"}},
        ),
    ):
        status, answer = await service.post(path, body)
        assert status == 400, (path, answer)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    status, answer = await alice.post(
        "/api/messages/send/", {"to_user_id": "bob", "body": "a\x00b"}
    )
    assert status == 400, answer
