"""Inbox lifecycle over REST and live: seen, unread, archive, unarchive, delete, expiry,
with exact unread/unseen counts and ``notification:updated`` on every connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from hub.realtime import NOTIFICATIONS_NAMESPACE
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory, SioConnect
from tests.harness.legacy_ws import LegacyConnect
from tests.harness.tokens import hs256_token

N = "/api/notifications"


def counts(body: dict[str, Any]) -> tuple[int, int]:
    return body["unread_count"], body["unseen_count"]


async def titles(client: ApiClient, **query: str) -> list[str]:
    status, page = await client.get(f"{N}/", **query)
    assert status == 200, page
    return [item["title"] for item in page["items"]]


async def test_each_action_changes_its_items_and_both_counts(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    ids = [(await service.notify(["alice", "bob"], title=f"n{i}"))[0] for i in range(5)]
    assert counts((await alice.get(f"{N}/unread-count/"))[1]) == (5, 5)

    status, body = await alice.post(f"{N}/mark-as-seen/", {"ids": ids[:2]})
    assert (status, body) == (200, {"updated": 2, "unread_count": 5, "unseen_count": 3})
    assert await titles(alice, seen="false") == ["n4", "n3", "n2"]
    # Reading implies seeing: n2 leaves both counts, n0 (seen already) only the unread one.
    status, body = await alice.post(f"{N}/mark-as-read/", {"ids": [ids[0], ids[2]]})
    assert body == {"updated": 2, "unread_count": 3, "unseen_count": 2}
    status, body = await alice.post(f"{N}/mark-as-unread/", {"ids": [ids[0]]})
    assert body == {"updated": 1, "unread_count": 4, "unseen_count": 2}

    # Archive all = the read ones (only n2 now); archived items leave the list and counts.
    status, body = await alice.post(f"{N}/archive/", {"all": True})
    assert body == {"updated": 1, "unread_count": 4, "unseen_count": 2}
    # Archiving an unread, unseen one takes it out of both counts.
    status, body = await alice.post(f"{N}/archive/", {"ids": [ids[4]]})
    assert body == {"updated": 1, "unread_count": 3, "unseen_count": 1}
    assert await titles(alice) == ["n3", "n1", "n0"]
    assert await titles(alice, archived="true") == ["n4", "n2"]
    status, page = await alice.get(f"{N}/", archived="true")
    assert all(item["archived_at"] for item in page["items"])
    assert counts(page) == (3, 1)

    status, body = await alice.post(f"{N}/unarchive/", {"ids": [ids[4]]})
    assert body == {"updated": 1, "unread_count": 4, "unseen_count": 2}
    # Deleting: an archived one changes no count, a live unread one does.
    status, body = await alice.request("DELETE", f"{N}/{ids[2]}/")
    assert (status, body) == (200, {"updated": 1, "unread_count": 4, "unseen_count": 2})
    status, body = await alice.request("DELETE", f"{N}/{ids[4]}/")
    assert body == {"updated": 1, "unread_count": 3, "unseen_count": 1}
    assert (await alice.request("DELETE", f"{N}/{ids[4]}/"))[1]["updated"] == 0
    assert await titles(alice) == ["n3", "n1", "n0"]
    assert await titles(alice, archived="true") == []

    status, body = await alice.post(f"{N}/mark-as-seen/", {"all": True})
    assert body == {"updated": 1, "unread_count": 3, "unseen_count": 0}
    status, body = await alice.post(f"{N}/mark-as-unread/", {"all": True})
    assert body == {"updated": 0, "unread_count": 3, "unseen_count": 0}
    # Bob's copies are untouched by all of it.
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    assert counts((await bob.get(f"{N}/unread-count/"))[1]) == (5, 5)
    assert len(await titles(bob)) == 5


async def test_ids_of_other_users_or_tenants_change_nothing(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    bob_ids = await service.notify(["bob"], title="bob's")
    other_tenant = f"{tenant}-other"
    foreign = await ApiClient.for_service(hub.url, other_tenant).notify(["alice"], title="x")
    await service.notify(["alice"], title="alice's")
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    wanted = bob_ids + foreign + ["nope", "-1", "99999999999"]
    for action in ("mark-as-seen", "mark-as-unread", "archive", "unarchive", "mark-as-read"):
        status, body = await alice.post(f"{N}/{action}/", {"ids": wanted})
        assert (status, body["updated"]) == (200, 0), action
    for notification_id in [*bob_ids, *foreign, "nope"]:
        assert (await alice.request("DELETE", f"{N}/{notification_id}/"))[1]["updated"] == 0
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    assert counts((await bob.get(f"{N}/unread-count/"))[1]) == (1, 1)
    assert await titles(bob) == ["bob's"]
    stranger = ApiClient.for_user(hub.url, other_tenant, "alice")
    assert counts((await stranger.get(f"{N}/unread-count/"))[1]) == (1, 1)


@pytest.mark.parametrize(
    "body",
    [
        {"ids": [str(i) for i in range(10_000)]},
        {},
        {"ids": ["1"], "all": True},
        {"all": False},
        {"ids": "1"},
        {"all": "yes"},
    ],
)
async def test_bad_selections_are_400(hub: RunningHub, tenant: str, body: dict[str, Any]) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    for action in ("mark-as-seen", "mark-as-unread", "archive", "unarchive"):
        status, reply = await alice.post(f"{N}/{action}/", body)
        assert status == 400, (action, reply)
        assert reply["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ttl_seconds": -5}, "ttl_seconds"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 10 * 365 * 24 * 3600 + 1}, "ttl_seconds"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "in the past"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, "ten years"),
        ({"expires_at": "2030-01-01T00:00:00"}, "time zone"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00Z", "ttl_seconds": 60}, "at most one"),
    ],
)
async def test_bad_expiry_is_400_and_stores_nothing(
    hub: RunningHub, tenant: str, fields: dict[str, Any], message: str
) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    status, body = await service.post(
        f"{N}/", {"user_ids": ["alice"], "title": "t", "body": "", **fields}
    )
    assert status == 400, body
    assert message in str(body["error"]), body
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    assert await titles(alice) == []


async def test_expired_items_leave_lists_counts_and_actions(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    soon = await service.notify(["alice"], title="soon", ttl_seconds=1)
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    await service.notify(["alice"], title="later", expires_at=later)
    await service.notify(["alice"], title="never")
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    _, page = await alice.get(f"{N}/")
    assert [item["title"] for item in page["items"]] == ["never", "later", "soon"]
    assert page["items"][1]["expires_at"].startswith(later[:19])
    assert page["items"][0]["expires_at"] is None
    assert counts(page) == (3, 3)
    await asyncio.sleep(1.2)
    _, page = await alice.get(f"{N}/")
    assert [item["title"] for item in page["items"]] == ["never", "later"]
    assert counts(page) == (2, 2)
    assert counts((await alice.get(f"{N}/unread-count/"))[1]) == (2, 2)
    # An expired item is gone for actions too: nothing changes, counts stay exact.
    _, body = await alice.post(f"{N}/mark-as-read/", {"ids": soon})
    assert body == {"updated": 0, "unread_count": 2, "unseen_count": 2}
    _, body = await alice.post(f"{N}/mark-as-read/", {"all": True})
    assert body == {"updated": 2, "unread_count": 0, "unseen_count": 0}


async def test_event_envelope_takes_expiry(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    now = datetime.now(UTC)
    envelope = {
        "event_id": "e-ttl",
        "tenant_id": tenant,
        "type": "deal.won",
        "recipients": [{"user_id": "alice"}],
        "notification": {"title": "ttl", "ttl_seconds": 3600},
    }
    assert (await service.post("/api/events/", envelope))[0] == 202
    # An event that waited in a queue past its expiry is applied (once) but never shown.
    late = {
        **envelope,
        "event_id": "e-late",
        "occurred_at": (now - timedelta(hours=2)).isoformat(),
        "notification": {"title": "late", "expires_at": (now - timedelta(hours=1)).isoformat()},
    }
    assert (await service.post("/api/events/", late))[0] == 202
    for bad in ({"ttl_seconds": -1}, {"expires_at": "2001-01-01T00:00:00Z"}):
        wrong = {
            **envelope,
            "event_id": "e-bad",
            "occurred_at": now.isoformat(),
            "notification": {"title": "bad", **bad},
        }
        status, body = await service.post("/api/events/", wrong)
        assert status == 400, body
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    status, page = await alice.get(f"{N}/")
    assert [item["title"] for item in page["items"]] == ["ttl"]
    expires_at = datetime.fromisoformat(page["items"][0]["expires_at"])
    assert timedelta(minutes=59) < expires_at - now < timedelta(minutes=61)
    assert counts(page) == (1, 1)


async def test_every_change_reaches_every_connection(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, legacy_connect: LegacyConnect
) -> None:
    token = hs256_token(tenant=tenant, user="alice")
    tab = await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=token)
    legacy = await legacy_connect(hub.url, tenant, "alice", token)
    bob = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="bob")
    )
    service = ApiClient.for_service(hub.url, tenant)
    ids = [(await service.notify(["alice"], title=f"n{i}"))[0] for i in range(3)]
    await tab.wait_for("notification:new", 3)
    await legacy.wait_for("notification:new", 3)
    alice = ApiClient.for_user(hub.url, tenant, "alice")

    await alice.post(f"{N}/mark-as-seen/", {"ids": [ids[0]]})
    await alice.post(f"{N}/mark-as-read/", {"ids": [ids[1]]})
    await alice.post(f"{N}/archive/", {"all": True})
    await alice.request("DELETE", f"{N}/{ids[2]}/")
    await alice.post(f"{N}/unarchive/", {"ids": [ids[1]]})
    await alice.post(f"{N}/mark-as-unread/", {"ids": [ids[1]]})
    from_socket = await tab.wait_for("notification:updated", 6)
    from_legacy = await legacy.wait_for("notification:updated", 6)
    assert from_socket == from_legacy
    shapes = [(e.get("ids"), e.get("all"), sorted(e["changes"])) for e in from_socket]
    assert shapes == [
        ([ids[0]], None, ["seen_at"]),
        ([ids[1]], None, ["read_at"]),
        (None, True, ["archived_at"]),
        ([ids[2]], None, ["deleted"]),
        ([ids[1]], None, ["archived_at"]),
        ([ids[1]], None, ["read_at"]),
    ]
    assert [counts(e) for e in from_socket] == [(3, 2), (2, 1), (2, 1), (1, 0), (1, 0), (2, 0)]
    assert from_socket[3]["changes"] == {"deleted": True}
    assert from_socket[4]["changes"] == {"archived_at": None}
    assert from_socket[5]["changes"] == {"read_at": None}
    # Reads are still announced as in v1, before their notification:updated.
    assert await tab.wait_for("notification:read") == [{"ids": [ids[1]], "unread_count": 2}]
    assert legacy.of_type("notification:read") == [{"ids": [ids[1]], "unread_count": 2}]
    await asyncio.sleep(0.2)
    assert bob.received("notification:updated") == []


async def test_replay_ends_with_the_current_counts(
    hub: RunningHub, tenant: str, sio_connect: SioConnect, legacy_connect: LegacyConnect
) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    ids = [(await service.notify(["alice"], title=f"n{i}"))[0] for i in range(4)]
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    # Meanwhile, on another device: one archived, one deleted, one seen.
    await alice.post(f"{N}/archive/", {"ids": [ids[1]]})
    await alice.request("DELETE", f"{N}/{ids[2]}/")
    await alice.post(f"{N}/mark-as-seen/", {"ids": [ids[3]]})
    token = hs256_token(tenant=tenant, user="alice")
    tab = await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, auth={"token": token, "last_seq": 0})
    legacy = await legacy_connect(hub.url, tenant, "alice", token, "&last_seq=0")
    for client in (tab, legacy):
        (end,) = await client.wait_for("notification:updated")
        assert end == {"ids": [], "changes": {}, "unread_count": 2, "unseen_count": 1}
    replayed = tab.received("notification:new")
    assert [item["id"] for item in replayed] == [ids[0], ids[1], ids[3]]
    assert replayed[1]["archived_at"] is not None and replayed[2]["seen_at"] is not None
    # A live-only connection gets no replay and so no counts event.
    live = await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=token)
    await asyncio.sleep(0.3)
    assert live.received("notification:updated") == []


async def test_a_deleted_newest_notification_does_not_keep_a_connection_catching_up(
    hub_factory: Callable[[Settings], Awaitable[RunningHub]],
    hub_settings: SettingsFactory,
    tenant: str,
    sio_connect: SioConnect,
) -> None:
    """The user's counter says seq 2 exists; it was deleted before this device saw it. The
    lag check (every 0.1 s here) catches the connection up once, not on every check."""
    running = await hub_factory(hub_settings(delivery_lag_check_seconds=0.1))
    service = ApiClient.for_service(running.url, tenant)
    first = await service.notify(["alice"], title="kept")
    second = await service.notify(["alice"], title="deleted")
    alice = ApiClient.for_user(running.url, tenant, "alice")
    assert (await alice.request("DELETE", f"{N}/{second[0]}/"))[1]["updated"] == 1

    def lagging() -> float:
        labels = {"reason": "lagging"}
        return REGISTRY.get_sample_value("notifyhub_delivery_catch_ups_total", labels) or 0.0

    before = lagging()
    token = hs256_token(tenant=tenant, user="alice")
    tab = await sio_connect(
        running.url, NOTIFICATIONS_NAMESPACE, auth={"token": token, "last_seq": 0}
    )
    (replayed,) = await tab.wait_for("notification:new")
    assert replayed["id"] == first[0]
    await asyncio.sleep(1.5)  # fifteen lag checks
    assert lagging() - before <= 1
    # And what comes next still arrives, in order.
    (third,) = await service.notify(["alice"], title="next")
    received = await tab.wait_for("notification:new", 2)
    assert [item["id"] for item in received] == [first[0], third]
