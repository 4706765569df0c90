"""Notification center over REST: create, list with keyset cursors, counts, mark read."""

from __future__ import annotations

import pytest

from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub


async def test_create_list_count_and_mark_read(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    ids = [
        (
            await service.notify(
                ["alice", "bob"], title=f"n{i}", category="deal" if i % 2 else "task"
            )
        )
        for i in range(5)
    ]
    alice_ids = [pair[0] for pair in ids]  # user ids are sorted: alice first

    status, page = await alice.get("/api/notifications/")
    assert status == 200
    assert [item["title"] for item in page["items"]] == ["n4", "n3", "n2", "n1", "n0"]
    assert [item["seq"] for item in page["items"]] == [5, 4, 3, 2, 1]
    assert [item["id"] for item in page["items"]] == alice_ids[::-1]
    assert page["unread_count"] == 5 and page["next_cursor"] is None
    first = page["items"][-1]
    assert set(first) == {
        "id",
        "tenant_id",
        "user_id",
        "seq",
        "category",
        "title",
        "body",
        "data",
        "link",
        "created_at",
        "read_at",
        "seen_at",
        "archived_at",
        "expires_at",
    }
    assert (first["tenant_id"], first["user_id"], first["read_at"]) == (tenant, "alice", None)
    assert first["created_at"].endswith("Z")

    status, body = await alice.post("/api/notifications/mark-as-read/", {"ids": alice_ids[:2]})
    assert (status, body) == (200, {"updated": 2, "unread_count": 3, "unseen_count": 3})
    # Marking again changes nothing.
    assert (await alice.post("/api/notifications/mark-as-read/", {"ids": alice_ids[:2]}))[1] == {
        "updated": 0,
        "unread_count": 3,
        "unseen_count": 3,
    }
    assert await alice.get("/api/notifications/unread-count/") == (
        200,
        {"unread_count": 3, "unseen_count": 3},
    )
    status, unread = await alice.get("/api/notifications/", unread="true")
    assert [item["title"] for item in unread["items"]] == ["n4", "n3", "n2"]
    status, deals = await alice.get("/api/notifications/", category="deal")
    assert [item["title"] for item in deals["items"]] == ["n3", "n1"]
    assert deals["items"][1]["read_at"] is not None

    assert (await alice.post("/api/notifications/mark-as-read/", {"all": True}))[1] == {
        "updated": 3,
        "unread_count": 0,
        "unseen_count": 0,
    }
    # Bob's are untouched.
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    assert (await bob.get("/api/notifications/unread-count"))[1] == {
        "unread_count": 5,
        "unseen_count": 5,
    }


async def test_keyset_pagination_walks_everything_once(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    for i in range(7):
        await service.notify(["carol"], title=f"n{i}")
    carol = ApiClient.for_user(hub.url, tenant, "carol")
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        status, page = await carol.get("/api/notifications/", **params)
        assert status == 200
        seen += [item["seq"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [7, 6, 5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    ("params", "status", "size"),
    [({"limit": "0"}, 200, 1), ({"limit": "500"}, 200, 3), ({"limit": "x"}, 400, None)],
)
async def test_limit_is_clamped_or_refused(
    hub: RunningHub, tenant: str, params: dict[str, str], status: int, size: int | None
) -> None:
    await ApiClient.for_service(hub.url, tenant).notify(["dave", "dave"], title="once")
    await ApiClient.for_service(hub.url, tenant).notify(["dave"])
    await ApiClient.for_service(hub.url, tenant).notify(["dave"])
    got, page = await ApiClient.for_user(hub.url, tenant, "dave").get(
        "/api/notifications/", **params
    )
    assert got == status
    if size is not None:
        assert len(page["items"]) == size


@pytest.mark.parametrize("cursor", ["garbage", "bjE6", "bjE6LTE", "%%%", "a" * 300, "bjE6MA"])
async def test_bad_cursor_is_400(hub: RunningHub, tenant: str, cursor: str) -> None:
    status, body = await ApiClient.for_user(hub.url, tenant, "erin").get(
        "/api/notifications/", cursor=cursor
    )
    assert status == 400
    assert body["error"]["code"] == "invalid_cursor"


async def test_bad_query_flag_is_400(hub: RunningHub, tenant: str) -> None:
    status, body = await ApiClient.for_user(hub.url, tenant, "erin").get(
        "/api/notifications/", unread="maybe"
    )
    assert (status, body["error"]["code"]) == (400, "validation_error")


async def test_idempotency_key_returns_the_same_ids(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    body = {"user_ids": ["u1", "u2"], "title": "t", "body": "b", "idempotency_key": "evt-1"}
    first = await service.post("/api/notifications/", body)
    again = await service.post("/api/notifications/", body)
    assert first[0] == again[0] == 201
    assert first[1]["ids"] == again[1]["ids"]
    assert (await ApiClient.for_user(hub.url, tenant, "u1").get("/api/notifications/unread-count"))[
        1
    ]["unread_count"] == 1
    # The same key in another tenant is another request.
    other = ApiClient.for_service(hub.url, tenant + "-b")
    assert (await other.post("/api/notifications/", body))[1]["ids"] != first[1]["ids"]


async def test_only_services_create(hub: RunningHub, tenant: str) -> None:
    user = ApiClient.for_user(hub.url, tenant, "mallory")
    status, body = await user.post(
        "/api/notifications/", {"user_ids": ["x"], "title": "t", "body": "b"}
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"user_ids": [], "title": "t", "body": "b"}, 400),
        ({"user_ids": ["u"], "title": "", "body": "b"}, 400),
        ({"user_ids": ["u"], "title": "   ", "body": "b"}, 400),
        ({"user_ids": ["u"], "body": "b"}, 400),
        ({"user_ids": ["u"], "title": "t", "body": "b", "extra": 1}, 400),
        ({"user_ids": ["u" * 129], "title": "t", "body": "b"}, 400),
        ({"user_ids": "u", "title": "t", "body": "b"}, 400),
        ({"user_ids": ["u"] * 1 + [f"x{i}" for i in range(1000)], "title": "t", "body": "b"}, 400),
        ({"user_ids": ["u"], "title": "t" * 201, "body": "b"}, 413),
        ({"user_ids": ["u"], "title": "t", "body": "b" * 5001}, 413),
        ({"user_ids": ["u"], "title": "t", "body": "b", "data": {"x": "y" * 17000}}, 413),
        ({"user_ids": ["u"], "title": "t", "body": "b", "data": [1]}, 400),
    ],
)
async def test_create_input_is_validated(
    hub: RunningHub, tenant: str, body: dict[str, object], status: int
) -> None:
    got, answer = await ApiClient.for_service(hub.url, tenant).post("/api/notifications/", body)
    assert got == status, answer
    assert answer["error"]["message"]
    # Nothing was stored.
    assert (await ApiClient.for_user(hub.url, tenant, "u").get("/api/notifications/unread-count"))[
        1
    ]["unread_count"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": "1"},
        {"ids": [1], "all": True},
        {"all": False},
        {"ids": [{"a": 1}]},
        {"ids": list(range(1001))},
    ],
)
async def test_mark_read_input_is_validated(hub: RunningHub, tenant: str, body: object) -> None:
    status, answer = await ApiClient.for_user(hub.url, tenant, "u").post(
        "/api/notifications/mark-as-read/", body
    )
    assert (status, answer["error"]["code"]) == (400, "validation_error")


async def test_mark_read_ignores_foreign_and_nonsense_ids(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    (mine,) = await service.notify(["me"])
    (theirs,) = await service.notify(["them"])
    status, body = await ApiClient.for_user(hub.url, tenant, "me").post(
        "/api/notifications/mark-as-read/",
        {"ids": [theirs, "abc", "-1", "99999999999999999999", mine]},
    )
    assert (status, body) == (200, {"updated": 1, "unread_count": 0, "unseen_count": 0})
    assert (
        await ApiClient.for_user(hub.url, tenant, "them").get("/api/notifications/unread-count")
    )[1] == {"unread_count": 1, "unseen_count": 1}
