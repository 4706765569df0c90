"""Preferences over REST: the user's effective object, PATCH merges and their live
``preferences:updated`` on every node, tenant defaults and locks (service role, own tenant
only), bad input refused with nothing stored, and the batch loader's statement count."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from db.engine import engine_for, make_session_factory
from hub.services.preferences import load_preferences
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory
from tests.harness.statements import StatementLog

PREFERENCES = "/api/preferences/"
TENANT_PREFERENCES = "/api/tenant/preferences/"
DEFAULT = {
    "channels": {"in_app": True, "email": True, "push": True},
    "categories": {},
    "quiet_hours": None,
}


async def test_patch_merges_and_get_returns_the_effective_object(
    hub: RunningHub, tenant: str
) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    assert await alice.get(PREFERENCES) == (200, DEFAULT)

    quiet = {"start": "22:00", "end": "07:30", "timezone": "Europe/Paris"}
    status, body = await alice.request(
        "PATCH",
        PREFERENCES,
        json={
            "channels": {"email": False},
            "categories": {"deals": {"email": True, "push": False}, "tasks": {"in_app": False}},
            "quiet_hours": quiet,
        },
    )
    assert status == 200, body
    assert body == {
        "channels": {"in_app": True, "email": False, "push": True},
        "categories": {"deals": {"email": True, "push": False}, "tasks": {"in_app": False}},
        "quiet_hours": quiet,
    }
    assert await alice.get(PREFERENCES) == (200, body)

    # Merged: only what is sent changes; a category of null removes the override.
    status, body = await alice.request(
        "PATCH", PREFERENCES, json={"categories": {"tasks": None, "deals": {"push": True}}}
    )
    assert status == 200
    assert body["categories"] == {"deals": {"email": True, "push": True}}
    assert body["channels"]["email"] is False and body["quiet_hours"] == quiet
    status, body = await alice.request("PATCH", PREFERENCES, json={"quiet_hours": None})
    assert body["quiet_hours"] is None
    # Another user of the tenant, and the same user id in another tenant, are untouched.
    assert await ApiClient.for_user(hub.url, tenant, "bob").get(PREFERENCES) == (200, DEFAULT)
    other = ApiClient.for_user(hub.url, tenant + "-x", "alice")
    assert await other.get(PREFERENCES) == (200, DEFAULT)


async def test_tenant_defaults_and_locks_beat_opt_outs(hub: RunningHub, tenant: str) -> None:
    service = ApiClient.for_service(hub.url, tenant)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    await alice.request(
        "PATCH",
        PREFERENCES,
        json={"channels": {"email": False}, "categories": {"security": {"in_app": False}}},
    )
    defaults = {
        "channels": {"push": False},
        "categories": {
            "security": {"locked": ["in_app", "email"]},
            "marketing": {"email": False, "in_app": True},
        },
        "quiet_hours": {"start": "20:00", "end": "08:00", "timezone": "UTC"},
    }
    status, stored = await service.request("PUT", TENANT_PREFERENCES, json=defaults)
    assert status == 200, stored
    assert stored == {
        "channels": {"in_app": True, "email": True, "push": False},
        "categories": {
            "marketing": {"in_app": True, "email": False},
            "security": {"locked": ["email", "in_app"]},
        },
        "quiet_hours": {"start": "20:00", "end": "08:00", "timezone": "UTC"},
    }
    assert await service.get(TENANT_PREFERENCES) == (200, stored)

    status, effective = await alice.get(PREFERENCES)
    assert status == 200
    assert effective == {
        # The user's email switch beats the tenant default; push falls to the tenant's.
        "channels": {"in_app": True, "email": False, "push": False},
        "categories": {
            "marketing": {"in_app": True, "email": False},
            # The user's in_app opt-out is stored, but the lock shows it on.
            "security": {"in_app": True, "email": True, "locked": ["email", "in_app"]},
        },
        # The user has none of their own: the tenant's apply.
        "quiet_hours": {"start": "20:00", "end": "08:00", "timezone": "UTC"},
    }
    # PUT replaces: the lock is gone and the user's stored opt-out shows again.
    status, _ = await service.request("PUT", TENANT_PREFERENCES, json={})
    assert status == 200
    (_, effective) = await alice.get(PREFERENCES)
    assert effective["categories"] == {"security": {"in_app": False}}


async def test_tenant_defaults_are_for_services_of_their_own_tenant_only(
    hub: RunningHub, tenant: str
) -> None:
    mine = ApiClient.for_service(hub.url, tenant)
    other = ApiClient.for_service(hub.url, tenant + "-other")
    body = {"categories": {"security": {"locked": ["email"]}}}
    assert (await mine.request("PUT", TENANT_PREFERENCES, json=body))[0] == 200
    # Another tenant's service reads and writes only its own defaults.
    status, theirs = await other.get(TENANT_PREFERENCES)
    assert (status, theirs["categories"]) == (200, {})
    assert (await other.request("PUT", TENANT_PREFERENCES, json={}))[0] == 200
    assert (await mine.get(TENANT_PREFERENCES))[1]["categories"] == {
        "security": {"locked": ["email"]}
    }
    # A user token is 403 on both; no token is 401.
    user = ApiClient.for_user(hub.url, tenant, "alice")
    status, error = await user.get(TENANT_PREFERENCES)
    assert (status, error["error"]["code"]) == (403, "forbidden")
    assert (await user.request("PUT", TENANT_PREFERENCES, json={}))[0] == 403
    assert (await ApiClient(hub.url, "not-a-token").get(PREFERENCES))[0] == 401


@pytest.mark.parametrize(
    ("body", "tenant_may"),
    [
        ({"channels": {"sms": True}}, False),
        ({"categories": {"deals": {"fax": False}}}, False),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Not/AZone"}}, False),
        ({"quiet_hours": {"start": "25:00", "end": "07:00", "timezone": "UTC"}}, False),
        ({"categories": {"x" * 100_000: {"email": False}}}, False),
        ({"categories": {"deals\x00": {"email": False}}}, False),
        ({"channels": {"email": False}, "extra": 1}, False),
        # Only a tenant locks channels.
        ({"categories": {"deals": {"email": False, "locked": ["email"]}}}, True),
    ],
)
async def test_bad_input_is_400_and_nothing_is_stored(
    hub: RunningHub, tenant: str, body: dict[str, Any], tenant_may: bool
) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    status, error = await alice.request("PATCH", PREFERENCES, json=body)
    assert (status, error["error"]["code"]) == (400, "validation_error"), error
    assert await alice.get(PREFERENCES) == (200, DEFAULT)
    if tenant_may:
        return
    service = ApiClient.for_service(hub.url, tenant)
    status, error = await service.request("PUT", TENANT_PREFERENCES, json=body)
    assert (status, error["error"]["code"]) == (400, "validation_error"), error
    assert (await service.get(TENANT_PREFERENCES))[1]["categories"] == {}


async def test_too_many_overrides_over_several_patches_is_400(hub: RunningHub, tenant: str) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    first = {f"a{i}": {"email": False} for i in range(60)}
    assert (await alice.request("PATCH", PREFERENCES, json={"categories": first}))[0] == 200
    second = {f"b{i}": {"email": False} for i in range(60)}
    status, error = await alice.request("PATCH", PREFERENCES, json={"categories": second})
    assert (status, error["error"]["code"]) == (400, "validation_error")
    assert len((await alice.get(PREFERENCES))[1]["categories"]) == 60


async def test_concurrent_patches_of_one_user_both_apply(hub: RunningHub, tenant: str) -> None:
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    await asyncio.gather(
        *(
            alice.request("PATCH", PREFERENCES, json={"categories": {f"c{i}": {"push": False}}})
            for i in range(10)
        )
    )
    assert len((await alice.get(PREFERENCES))[1]["categories"]) == 10


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_a_batch_of_1000_recipients_loads_in_one_statement(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    count_statements: StatementLog,
    tenant: str,
    tmp_path: Path,
    backend: str,
) -> None:
    overrides: dict[str, Any] = {}
    if backend == "sqlite":
        overrides = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            "redis_url": None,
            "auto_migrate": True,
        }
    settings: Settings = hub_settings(**overrides)
    hub = await hub_factory(settings)
    users = [f"u{i}" for i in range(1000)]
    for user in users[:5]:
        await ApiClient.for_user(hub.url, tenant, user).request(
            "PATCH", PREFERENCES, json={"categories": {"deals": {"in_app": False}}}
        )
    await ApiClient.for_service(hub.url, tenant).request(
        "PUT", TENANT_PREFERENCES, json={"channels": {"email": False}}
    )
    engine = engine_for(settings)
    statements = count_statements(engine)
    try:
        async with make_session_factory(engine)() as session:
            resolvers = await load_preferences(
                session, [(tenant, user) for user in users] + [("other", "u1")]
            )
    finally:
        await engine.dispose()
    assert len(statements) == 1, statements
    resolver = resolvers.for_tenant(tenant)
    assert [resolver.wants(user, "deals", "in_app") for user in users[:7]] == [False] * 5 + [
        True
    ] * 2
    assert not resolver.wants("u999", "deals", "email")  # the tenant's default
    assert resolvers.wants("other", "u1", "deals", "email")
