"""Notification preferences: who wants which channel for which category (no I/O here).

A user's preferences and a tenant's defaults have one shape: channel switches, per-category
switches and quiet hours; a tenant's category may also lock channels on. Documents are
stored as JSON in that shape (``db.models.UserPreference``, ``db.models.TenantPreference``)
and read back into the frozen objects below. The resolution order (docs/protocol.md 5.4)
is written once, in :func:`wants`; the effective object that
clients see (REST, ``preferences:updated``) is made by :func:`effective` from the same rule,
so what a client is shown is what delivery does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from hub.records import (
    CategoryPreferencesRecord,
    ChannelSwitchesRecord,
    PreferencesRecord,
    QuietHoursRecord,
)

Channel = Literal["in_app", "email", "push"]
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)

# One user's or tenant's document stays small: it is read for every recipient of a batch.
MAX_CATEGORIES = 100
CATEGORY_MAX_CHARS = 64  # the notification's own category column

Switches = Mapping[str, bool]  # channel -> on; a channel not named is not decided here


@dataclass(frozen=True, slots=True)
class Document:
    """A user's preferences, or a tenant's defaults (only a tenant's may lock channels)."""

    channels: Switches = field(default_factory=dict)
    categories: Mapping[str, Switches] = field(default_factory=dict)
    locked: Mapping[str, frozenset[str]] = field(default_factory=dict)
    quiet_hours: Mapping[str, str] | None = None

    @classmethod
    def from_stored(
        cls,
        channels: Mapping[str, Any] | None,
        categories: Mapping[str, Any] | None,
        quiet_hours: Mapping[str, str] | None,
    ) -> Document:
        """A document from its JSON columns (a tenant's categories carry ``locked``)."""
        switches: dict[str, dict[str, bool]] = {}
        locked: dict[str, frozenset[str]] = {}
        for name, value in (categories or {}).items():
            switches[name] = _switches(value)
            if value.get("locked"):
                locked[name] = frozenset(value["locked"])
        return cls(_switches(channels or {}), switches, locked, quiet_hours)

    def stored_categories(self) -> dict[str, dict[str, Any]]:
        """The ``categories`` JSON column of this document."""
        stored: dict[str, dict[str, Any]] = {}
        for name in sorted(self.categories.keys() | self.locked.keys()):
            entry: dict[str, Any] = dict(self.categories.get(name, {}))
            if self.locked.get(name):
                entry["locked"] = sorted(self.locked[name])
            stored[name] = entry
        return stored


EMPTY = Document()


def _switches(value: Mapping[str, Any]) -> dict[str, bool]:
    return {channel: bool(value[channel]) for channel in CHANNELS if value.get(channel) is not None}


def wants(tenant: Document, user: Document, category: str | None, channel: str) -> bool:
    """Whether ``user`` gets ``channel`` for ``category``, in the contract's order: locked by
    the tenant -> on; the user's category override; the tenant's category default; the
    user's channel switch; the tenant's channel default; on. Without a category only the
    channel switches count."""
    if category is not None:
        if channel in tenant.locked.get(category, ()):
            return True
        for document in (user, tenant):
            decided = document.categories.get(category, {}).get(channel)
            if decided is not None:
                return decided
    for document in (user, tenant):
        decided = document.channels.get(channel)
        if decided is not None:
            return decided
    return True


def effective(tenant: Document, user: Document) -> PreferencesRecord:
    """The effective preferences of ``user`` (the object ``GET /api/preferences/`` returns).

    Every channel switch is resolved. A category appears when the tenant or the user says
    anything about it; it names the channels someone decided (resolved, so a locked one
    shows on whatever the user stored) and ``locked`` when the tenant locked any.
    """
    categories: dict[str, CategoryPreferencesRecord] = {}
    for name in sorted(tenant.categories.keys() | tenant.locked.keys() | user.categories.keys()):
        locked = tenant.locked.get(name, frozenset())
        decided = locked.union(tenant.categories.get(name, {}), user.categories.get(name, {}))
        entry: CategoryPreferencesRecord = {}
        for channel in CHANNELS:
            if channel in decided:
                entry[channel] = wants(tenant, user, name, channel)
        if locked:
            entry["locked"] = sorted(locked)
        categories[name] = entry
    return {
        "channels": _resolved_switches(lambda channel: wants(tenant, user, None, channel)),
        "categories": categories,
        "quiet_hours": _quiet_hours(user.quiet_hours or tenant.quiet_hours),
    }


def tenant_view(tenant: Document) -> PreferencesRecord:
    """A tenant's defaults as ``GET /api/tenant/preferences/`` returns them: channel
    defaults resolved (one not set is on), categories as stored."""
    categories: dict[str, CategoryPreferencesRecord] = {}
    for name, stored in tenant.stored_categories().items():
        entry: CategoryPreferencesRecord = {}
        for channel in CHANNELS:
            if channel in stored:
                entry[channel] = stored[channel]
        if "locked" in stored:
            entry["locked"] = stored["locked"]
        categories[name] = entry
    return {
        "channels": _resolved_switches(lambda channel: tenant.channels.get(channel, True)),
        "categories": categories,
        "quiet_hours": _quiet_hours(tenant.quiet_hours),
    }


def _resolved_switches(resolve: Callable[[Channel], bool]) -> ChannelSwitchesRecord:
    return {"in_app": resolve("in_app"), "email": resolve("email"), "push": resolve("push")}


def _quiet_hours(stored: Mapping[str, str] | None) -> QuietHoursRecord | None:
    if not stored:
        return None
    return {"start": stored["start"], "end": stored["end"], "timezone": stored["timezone"]}


class TooManyCategories(ValueError):
    """A merge would keep more than :data:`MAX_CATEGORIES` category overrides."""


def merge(user: Document, patch: Mapping[str, Any]) -> Document:
    """``user`` with a PATCH applied. ``patch`` holds only the fields the client sent:
    a channel set to null forgets the user's switch (the tenant default applies again), a
    category set to null removes the user's whole override of it, ``quiet_hours`` null
    removes them."""
    channels = dict(user.channels)
    _merge_switches(channels, patch.get("channels") or {})
    categories = {name: dict(value) for name, value in user.categories.items()}
    for name, value in (patch.get("categories") or {}).items():
        if value is None:
            categories.pop(name, None)
            continue
        merged = categories.setdefault(name, {})
        _merge_switches(merged, value)
        if not merged:
            del categories[name]
    if len(categories) > MAX_CATEGORIES:
        raise TooManyCategories(f"at most {MAX_CATEGORIES} categories may have overrides")
    quiet_hours = patch.get("quiet_hours", user.quiet_hours)
    return Document(channels, categories, {}, quiet_hours)


def _merge_switches(into: dict[str, bool], changes: Mapping[str, bool | None]) -> None:
    for channel, value in changes.items():
        if value is None:
            into.pop(channel, None)
        else:
            into[channel] = value
