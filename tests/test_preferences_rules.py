"""The resolution order, the effective object and PATCH merges of hub/preferences.py, and the
request models that validate preferences (no I/O)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from hub.preferences import EMPTY, Document, effective, merge, tenant_view, wants
from hub.schemas import PreferencesPatchIn, TenantPreferencesIn

TENANT = Document.from_stored(
    {"push": False},
    {
        "deals": {"email": False},
        "security": {"locked": ["email"]},
        "digest": {"in_app": True, "locked": ["in_app"]},
    },
    None,
)


@pytest.mark.parametrize(
    ("tenant", "user", "category", "channel", "expected", "rung"),
    [
        (EMPTY, EMPTY, "deals", "email", True, "nothing said: on"),
        (
            Document(channels={"email": False}),
            EMPTY,
            "deals",
            "email",
            False,
            "tenant's channel default",
        ),
        (
            Document(channels={"email": False}),
            Document(channels={"email": True}),
            "deals",
            "email",
            True,
            "user's channel switch beats the tenant's channel default",
        ),
        (
            Document(categories={"deals": {"email": True}}),
            Document(channels={"email": False}),
            "deals",
            "email",
            True,
            "tenant's category default beats the user's channel switch",
        ),
        (
            Document(categories={"deals": {"email": True}}),
            Document(categories={"deals": {"email": False}}),
            "deals",
            "email",
            False,
            "user's category override beats the tenant's category default",
        ),
        (
            Document(
                locked={"deals": frozenset({"email"})}, categories={"deals": {"email": False}}
            ),
            Document(categories={"deals": {"email": False}}, channels={"email": False}),
            "deals",
            "email",
            True,
            "a lock beats every opt-out",
        ),
        (
            Document(locked={"deals": frozenset({"email"})}),
            Document(channels={"in_app": False}),
            "deals",
            "in_app",
            False,
            "a lock covers only its channels",
        ),
        (
            Document(
                categories={"deals": {"in_app": False}}, locked={"deals": frozenset({"email"})}
            ),
            Document(categories={"deals": {"in_app": True}}),
            None,
            "in_app",
            True,
            "no category: only the channel switches count",
        ),
        (
            EMPTY,
            Document(categories={"deals": {"email": False}}),
            "tasks",
            "email",
            True,
            "another category's override does not apply",
        ),
    ],
)
def test_each_rung_of_the_resolution_order(
    tenant: Document, user: Document, category: str | None, channel: str, expected: bool, rung: str
) -> None:
    assert wants(tenant, user, category, channel) is expected, rung


def test_effective_object_shows_locked_channels_on_and_decided_channels_only() -> None:
    user = Document(
        channels={"email": False},
        categories={"security": {"email": False}, "tasks": {"push": True}},
        quiet_hours={"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"},
    )
    assert effective(TENANT, user) == {
        "channels": {"in_app": True, "email": False, "push": False},
        "categories": {
            "deals": {"email": False},
            "digest": {"in_app": True, "locked": ["in_app"]},
            # The user's opt-out is stored but has no effect: the lock shows it on.
            "security": {"email": True, "locked": ["email"]},
            "tasks": {"push": True},
        },
        "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"},
    }
    # Without preferences of its own a user sees the tenant's defaults resolved.
    assert effective(EMPTY, EMPTY) == {
        "channels": {"in_app": True, "email": True, "push": True},
        "categories": {},
        "quiet_hours": None,
    }


def test_tenant_view_keeps_locks_and_fills_channel_defaults() -> None:
    assert tenant_view(TENANT) == {
        "channels": {"in_app": True, "email": True, "push": False},
        "categories": {
            "deals": {"email": False},
            "digest": {"in_app": True, "locked": ["in_app"]},
            "security": {"locked": ["email"]},
        },
        "quiet_hours": None,
    }


def test_patch_merges_and_null_removes() -> None:
    user = Document(
        channels={"email": False, "push": False},
        categories={"deals": {"email": False, "in_app": True}, "tasks": {"push": False}},
        quiet_hours={"start": "22:00", "end": "07:00", "timezone": "UTC"},
    )
    merged = merge(
        user,
        {
            "channels": {"email": True, "push": None},
            "categories": {"deals": {"email": True}, "tasks": None, "new": {"in_app": False}},
        },
    )
    assert merged.channels == {"email": True}
    assert merged.categories == {"deals": {"email": True, "in_app": True}, "new": {"in_app": False}}
    assert merged.quiet_hours == user.quiet_hours  # not sent: kept
    assert merge(merged, {"quiet_hours": None}).quiet_hours is None
    # A category whose last switch is forgotten is gone.
    assert "new" not in merge(merged, {"categories": {"new": {"in_app": None}}}).categories


def _patch(body: dict[str, Any]) -> dict[str, Any]:
    return PreferencesPatchIn.model_validate(body).model_dump(exclude_unset=True)


def test_patch_model_keeps_only_what_was_sent() -> None:
    assert _patch({"categories": {"deals": None}}) == {"categories": {"deals": None}}
    assert _patch({"channels": {"email": False}}) == {"channels": {"email": False}}
    assert _patch({"quiet_hours": None}) == {"quiet_hours": None}


@pytest.mark.parametrize(
    "body",
    [
        {"channels": {"sms": True}},
        {"channels": {"email": "yes"}},
        {"categories": {"deals": {"fax": False}}},
        {"categories": {"deals": {"email": False, "locked": ["email"]}}},  # users cannot lock
        {"categories": {"x" * 100_000: {"email": False}}},
        {"categories": {"": {"email": False}}},
        {"categories": {f"c{i}": {"email": False} for i in range(101)}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "../../etc/passwd"}},
        {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "America"}},
        {"quiet_hours": {"start": "24:00", "end": "07:00", "timezone": "UTC"}},
        {"quiet_hours": {"start": "7:00", "end": "08:00", "timezone": "UTC"}},
        {"quiet_hours": {"start": "07:00", "end": "07:00", "timezone": "UTC"}},
        {"quiet_hours": {"start": "22:00", "timezone": "UTC"}},
        {"theme": "dark"},
    ],
)
def test_bad_preferences_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        PreferencesPatchIn.model_validate(body)


def test_tenant_model_takes_locks_of_known_channels_only() -> None:
    TenantPreferencesIn.model_validate({"categories": {"security": {"locked": ["email", "push"]}}})
    with pytest.raises(pydantic.ValidationError):
        TenantPreferencesIn.model_validate({"categories": {"security": {"locked": ["sms"]}}})
