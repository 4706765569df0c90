"""Preferences: read and change a user's, read and replace a tenant's defaults, and load the
preferences of a whole batch of recipients for the paths that create notifications and
emails. The rules themselves are in :mod:`hub.preferences`; this module only stores.

REST and the unsubscribe link call :class:`PreferenceService`; every create path reads
preferences with :func:`load_preferences` inside its own transaction, the email task with
:func:`user_wants`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.base import JsonDocument
from db.models import TenantPreference, UserPreference
from hub import preferences
from hub.delivery.bus import NotificationBus
from hub.delivery.notifications import PREFERENCES_EVENT
from hub.errors import InvalidInput, Unavailable
from hub.preferences import EMPTY, Document
from hub.records import PreferencesRecord, QuietHoursRecord
from hub.services import unsubscribe
from hub.services.common import (
    USER_KEYS_TABLES,
    dialect_of,
    insert_for,
    user_keys_param,
)
from hub.services.unsubscribe import Target

log = logging.getLogger(__name__)

UserKey = tuple[str, str]  # (tenant_id, user_id)


@dataclass(frozen=True, slots=True)
class Resolver:
    """The preferences of some users of one tenant, loaded at once."""

    tenant: Document
    users: Mapping[str, Document]

    def wants(self, user_id: str, category: str | None, channel: str) -> bool:
        return preferences.wants(self.tenant, self.users.get(user_id, EMPTY), category, channel)


@dataclass(slots=True)
class PreferenceBook:
    """The preferences of the recipients of a batch and of their tenants, read in as few
    statements as possible: what every create path decides with (:meth:`wants`)."""

    tenants: dict[str, Document] = field(default_factory=dict)
    users: dict[UserKey, Document] = field(default_factory=dict)
    _read_users: set[UserKey] = field(default_factory=set)
    _read_tenants: set[str] = field(default_factory=set)
    _tenant_answers: dict[tuple[str, str | None, str], bool] = field(default_factory=dict)

    async def read(self, session: AsyncSession, keys: Iterable[UserKey]) -> None:
        """Read the preferences of those of ``keys`` not read yet, and of their tenants: one
        statement however many there are (none when all were read)."""
        users = set(keys) - self._read_users
        if not users:
            return
        for row in await session.execute(
            _DOCUMENTS_QUERIES[dialect_of(session)], user_keys_param(users)
        ):
            if row.user_id is None:  # the tenant's defaults and locks
                self.tenants[row.tenant_id] = _document(row)
            else:
                self.users[(row.tenant_id, row.user_id)] = _document(row)
        self._read_users |= users
        self._read_tenants |= {tenant for tenant, _ in users}

    def wants(self, tenant_id: str, user_id: str, category: str | None, channel: str) -> bool:
        tenant = self.tenants.get(tenant_id, EMPTY)
        user = self.users.get((tenant_id, user_id))
        if user is not None:
            return preferences.wants(tenant, user, category, channel)
        # Most recipients have no preferences of their own: their answer is the tenant's,
        # worked out once per batch (once the tenant's document has been read).
        key = (tenant_id, category, channel)
        answer = self._tenant_answers.get(key)
        if answer is None:
            answer = preferences.wants(tenant, EMPTY, category, channel)
            if tenant_id in self._read_tenants:
                self._tenant_answers[key] = answer
        return answer

    def for_tenant(self, tenant_id: str) -> Resolver:
        users = {user: doc for (tenant, user), doc in self.users.items() if tenant == tenant_id}
        return Resolver(self.tenants.get(tenant_id, EMPTY), users)


# One statement for a batch's users and their tenants, with constant SQL text whatever the
# batch size (the keys travel as one JSON parameter: an expanding IN list would be compiled
# anew for every size). Tenant rows come with a null user_id.
_DOCUMENT = "p.channels, p.categories, p.quiet_hours"
_DOCUMENTS = (
    f"SELECT p.tenant_id, p.user_id, {_DOCUMENT} FROM user_preferences AS p "  # noqa: S608
    "JOIN {keys} AS k ON p.tenant_id = k.tenant_id AND p.user_id = k.user_id "
    f"UNION ALL SELECT p.tenant_id, NULL, {_DOCUMENT} FROM tenant_preferences AS p "
    "WHERE p.tenant_id IN (SELECT tenant_id FROM {keys} AS t)"
)
_JSON_COLUMNS = {"channels": JsonDocument, "categories": JsonDocument, "quiet_hours": JsonDocument}
_DOCUMENTS_QUERIES = {
    dialect: text(_DOCUMENTS.format(keys=keys)).columns(**_JSON_COLUMNS)
    for dialect, keys in USER_KEYS_TABLES.items()
}


async def load_preferences(session: AsyncSession, keys: Collection[UserKey]) -> PreferenceBook:
    """The preferences of every ``(tenant_id, user_id)`` of ``keys`` and of their tenants,
    in one statement however many there are."""
    book = PreferenceBook()
    await book.read(session, keys)
    return book


async def load_resolver(
    session: AsyncSession, tenant_id: str, user_ids: Collection[str]
) -> Resolver:
    """:func:`load_preferences` for users of one tenant."""
    loaded = await load_preferences(session, {(tenant_id, user) for user in user_ids})
    return loaded.for_tenant(tenant_id)


async def user_wants(
    *,
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: str,
    user_id: str,
    category: str | None,
    channel: str,
) -> bool:
    """Whether one user wants ``channel`` for ``category`` now (the email task asks again
    right before sending: preferences may have changed since the email was queued)."""
    async with sessions() as session:
        resolver = await load_resolver(session, tenant_id, [user_id])
    return resolver.wants(user_id, category, channel)


def _document(row: Any) -> Document:
    return Document.from_stored(row.channels, row.categories, row.quiet_hours)


async def _tenant_document(session: AsyncSession, tenant_id: str) -> Document:
    row = await session.get(TenantPreference, tenant_id)
    return EMPTY if row is None else _document(row)


class PreferenceService:
    """A user's preferences and a tenant's defaults: read, change, and the unsubscribe link's
    change. Built once per process; REST and the unsubscribe link call it."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: NotificationBus,
        unsubscribe_key: bytes | None,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        # None when no key is safe to use: then every unsubscribe token is refused.
        self.unsubscribe_key = unsubscribe_key

    async def effective(self, *, tenant_id: str, user_id: str) -> PreferencesRecord:
        """The user's effective preferences (the object of ``GET /api/preferences/``)."""
        async with self.sessions() as session:
            resolver = await load_resolver(session, tenant_id, [user_id])
        return preferences.effective(resolver.tenant, resolver.users.get(user_id, EMPTY))

    async def update(
        self, *, tenant_id: str, user_id: str, patch: Mapping[str, Any]
    ) -> PreferencesRecord:
        """Merge ``patch`` (the fields a client sent, see :func:`hub.preferences.merge`) into
        the user's preferences; returns the new effective preferences, which every
        ``/notifications`` socket of the user then receives as ``preferences:updated``."""
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            row = await _locked_user_row(session, tenant_id, user_id, now)
            try:
                merged = preferences.merge(_document(row), patch)
            except preferences.TooManyCategories as exc:
                raise InvalidInput(str(exc)) from None
            row.channels = dict(merged.channels)
            row.categories = merged.stored_categories()
            row.quiet_hours = dict(merged.quiet_hours) if merged.quiet_hours else None
            row.updated_at = now
            result = preferences.effective(await _tenant_document(session, tenant_id), merged)
        try:
            await self.bus.publish_user_events(
                tenant_id=tenant_id, user_id=user_id, events=[(PREFERENCES_EVENT, dict(result))]
            )
        except Unavailable:
            log.warning("preferences stored but not published live")
        return result

    async def unsubscribe(self, token: str) -> Target:
        """Follow an email's unsubscribe link: the token's category email off for its user
        (400 for a token this hub did not sign with its current key)."""
        target = unsubscribe.verify(self.unsubscribe_key, token)
        await self.update(
            tenant_id=target.tenant_id,
            user_id=target.user_id,
            patch={"categories": {target.category: {"email": False}}},
        )
        return target

    async def tenant_defaults(self, *, tenant_id: str) -> PreferencesRecord:
        """The tenant's defaults (``GET /api/tenant/preferences/``)."""
        async with self.sessions() as session:
            return preferences.tenant_view(await _tenant_document(session, tenant_id))

    async def replace_tenant_defaults(
        self, *, tenant_id: str, defaults: Mapping[str, Any]
    ) -> PreferencesRecord:
        """Replace the tenant's defaults with ``defaults`` (the validated PUT body)."""
        document = Document.from_stored(
            defaults.get("channels"), defaults.get("categories"), defaults.get("quiet_hours")
        )
        values = {
            "channels": dict(document.channels),
            "categories": document.stored_categories(),
            "quiet_hours": dict(document.quiet_hours) if document.quiet_hours else None,
            "updated_at": datetime.now(UTC),
        }
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert_for(session)(TenantPreference)
                .values(tenant_id=tenant_id, **values)
                .on_conflict_do_update(index_elements=["tenant_id"], set_=values)
            )
        return preferences.tenant_view(document)


async def _locked_user_row(
    session: AsyncSession, tenant_id: str, user_id: str, now: datetime
) -> UserPreference:
    """The user's row, locked for this transaction (made empty first if there is none), so
    that two concurrent changes queue instead of one overwriting the other's merge."""
    await session.execute(
        insert_for(session)(UserPreference)
        .values(
            tenant_id=tenant_id,
            user_id=user_id,
            channels={},
            categories={},
            quiet_hours=None,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    row = await session.scalar(
        select(UserPreference)
        .where(UserPreference.tenant_id == tenant_id, UserPreference.user_id == user_id)
        .with_for_update()
    )
    if row is None:  # pragma: no cover - inserted just above, in this transaction
        raise RuntimeError("preference row vanished")
    return row


async def quiet_hours_of(
    sessions: async_sessionmaker[AsyncSession], tenant_id: str, user_id: str
) -> QuietHoursRecord | None:
    """The user's effective quiet hours (theirs, else the tenant's), for email and push."""
    async with sessions() as session:
        resolver = await load_resolver(session, tenant_id, [user_id])
    return preferences.effective(resolver.tenant, resolver.users.get(user_id, EMPTY))["quiet_hours"]
