"""Preferences where notifications and emails are made: REST create answers ``suppressed``,
event intake stores no notification and no email for a recipient who turned that channel
off, a tenant lock wins, and a batch reads preferences in a constant number of statements."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hub.intake.apply import email_id_for
from hub.intake.envelope import EventEnvelope
from hub.keys import DB_ENGINE
from hub.realtime import NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory, SioConnect
from tests.harness.statements import StatementLog
from tests.harness.tokens import hs256_token

PREFERENCES = "/api/preferences/"


async def opt_out(hub: RunningHub, tenant: str, user: str, body: dict[str, Any]) -> None:
    status, answer = await ApiClient.for_user(hub.url, tenant, user).request(
        "PATCH", PREFERENCES, json=body
    )
    assert status == 200, answer


async def unread(hub: RunningHub, tenant: str, user: str) -> int:
    status, body = await ApiClient.for_user(hub.url, tenant, user).get(
        "/api/notifications/unread-count/"
    )
    assert status == 200
    count: int = body["unread_count"]
    return count


async def test_rest_create_suppresses_recipients_who_turned_in_app_off(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    await opt_out(hub, tenant, "alice", {"categories": {"deals": {"in_app": False}}})
    await opt_out(hub, tenant, "carol", {"channels": {"in_app": False}})
    alice_socket = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="alice")
    )
    bob_socket = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="bob")
    )
    service = ApiClient.for_service(hub.url, tenant)
    body = {"user_ids": ["alice", "bob", "carol"], "title": "Deal won", "body": "b"}
    status, created = await service.post("/api/notifications/", {**body, "category": "deals"})
    assert status == 201, created
    assert len(created["ids"]) == 1 and created["suppressed"] == ["alice", "carol"]
    await bob_socket.wait_for("notification:new")
    # Another category: only carol's channel switch applies.
    status, other = await service.post(
        "/api/notifications/", {**body, "category": "tasks", "idempotency_key": "k-1"}
    )
    assert (len(other["ids"]), other["suppressed"]) == (2, ["carol"])
    # A repeated key answers the same, suppressed included.
    assert await service.post(
        "/api/notifications/", {**body, "category": "tasks", "idempotency_key": "k-1"}
    ) == (201, other)
    # Nobody left: nothing stored, nothing emitted.
    status, nobody = await service.post(
        "/api/notifications/", {**body, "user_ids": ["carol"], "category": "deals"}
    )
    assert (status, nobody) == (201, {"ids": [], "suppressed": ["carol"]})

    await alice_socket.wait_for("notification:new")  # the tasks one
    await asyncio.sleep(0.2)
    assert [n["category"] for n in alice_socket.received("notification:new")] == ["tasks"]
    assert [await unread(hub, tenant, user) for user in ("alice", "bob", "carol")] == [1, 2, 0]


async def test_a_tenant_lock_beats_the_opt_out_at_create(hub: RunningHub, tenant: str) -> None:
    await opt_out(hub, tenant, "alice", {"channels": {"in_app": False}})
    service = ApiClient.for_service(hub.url, tenant)
    status, _ = await service.request(
        "PUT", "/api/tenant/preferences/", json={"categories": {"security": {"locked": ["in_app"]}}}
    )
    assert status == 200
    body = {"user_ids": ["alice"], "title": "New sign-in", "body": "b"}
    status, created = await service.post("/api/notifications/", {**body, "category": "security"})
    assert (len(created["ids"]), created["suppressed"]) == (1, [])
    status, created = await service.post("/api/notifications/", {**body, "category": "deals"})
    assert (created["ids"], created["suppressed"]) == ([], ["alice"])


def envelope(tenant: str, event_id: str, category: str | None, users: list[str]) -> dict[str, Any]:
    notification: dict[str, Any] = {"title": "Deal won", "body": "ACME"}
    if category is not None:
        notification["category"] = category
    return {
        "event_id": event_id,
        "tenant_id": tenant,
        "type": "deal.won",
        "recipients": [{"user_id": user, "email": f"{user}@example.com"} for user in users],
        "notification": notification,
        "email": {"template_key": "deal_won", "context": {}},
    }


async def email_exists(service: ApiClient, event: dict[str, Any], user: str) -> bool:
    email_id = email_id_for(EventEnvelope.model_validate(event), user)
    status, _ = await service.get(f"/api/emails/{email_id}/")
    assert status in (200, 404)
    return status == 200


async def test_intake_makes_no_notification_and_no_email_for_who_turned_them_off(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    await opt_out(hub, tenant, "alice", {"categories": {"deals": {"in_app": False}}})
    await opt_out(hub, tenant, "bob", {"categories": {"deals": {"email": False}}})
    sockets = {
        user: await sio_connect(
            hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user=user)
        )
        for user in ("alice", "bob", "carol")
    }
    service = ApiClient.for_service(hub.url, tenant)
    event = envelope(tenant, "e-1", "deals", ["alice", "bob", "carol"])
    assert (await service.post("/api/events/", event))[0] == 202
    await sockets["bob"].wait_for("notification:new")
    await sockets["carol"].wait_for("notification:new")
    await asyncio.sleep(0.2)
    assert sockets["alice"].received("notification:new") == []
    assert [await unread(hub, tenant, user) for user in ("alice", "bob", "carol")] == [0, 1, 1]
    assert [await email_exists(service, event, user) for user in ("alice", "bob", "carol")] == [
        True,
        False,
        True,
    ]
    # An event without a category follows the channel switches only.
    uncategorised = envelope(tenant, "e-2", None, ["alice", "bob"])
    assert (await service.post("/api/events/", uncategorised))[0] == 202
    assert [await unread(hub, tenant, user) for user in ("alice", "bob")] == [1, 2]
    assert await email_exists(service, uncategorised, "bob")


async def test_an_event_for_1000_recipients_costs_the_statements_of_one_for_10(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    count_statements: StatementLog,
    tenant: str,
) -> None:
    # No Redis, and the in-process sweepers, scheduler and purge (embedded profile) asleep after their
    # first round: nothing but the requests of this test talks to the database.
    hub = await hub_factory(
        hub_settings(
            redis_url=None,
            email_sweep_interval_seconds=3600.0,
            purge_interval_seconds=3600.0,
            scheduler_interval_seconds=3600.0,
        )
    )
    for user in ("u0", "u5", "u999"):
        await opt_out(hub, tenant, user, {"categories": {"deals": {"in_app": False}}})
    await asyncio.sleep(0.5)  # the sweepers' first round, at start, is over
    service = ApiClient.for_service(hub.url, tenant)
    statements = count_statements(hub.app[DB_ENGINE])
    counts = []
    for event_id, size in (("small", 10), ("large", 1000)):
        statements.clear()
        event = envelope(tenant, event_id, "deals", [f"u{i}" for i in range(size)])
        del event["email"]  # (emails are one INSERT each, by design: the sweeper's records)
        assert (await service.post("/api/events/", event))[0] == 202
        counts.append(len(statements))
        assert sum("preferences" in statement for statement in statements) == 1, statements
    assert counts[0] == counts[1], counts
    assert await unread(hub, tenant, "u5") == 0 and await unread(hub, tenant, "u6") == 2


async def test_push_off_stores_the_notification_but_records_no_push(
    hub: RunningHub, tenant: str
) -> None:
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    status, _ = await ann.post("/api/devices/", {"kind": "apns", "token": "ann-phone"})
    assert status == 201
    await opt_out(hub, tenant, "ann", {"categories": {"deals": {"push": False}}})
    service = ApiClient.for_service(hub.url, tenant)
    pushes = []
    for category in ("deals", "tasks"):
        [notification_id] = await service.notify(["ann"], category=category)
        status, body = await service.get(f"/api/notifications/{notification_id}/deliveries/")
        assert status == 200, body
        pushes.append(len(body["items"]))
    assert pushes == [0, 1]
