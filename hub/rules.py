"""The rules a notification must satisfy, shared by the hub and by CRM modules.

``hub.producer`` (imported by CRM modules) checks events with these very functions before
publishing, so this module stays light: no database, no Redis, no hub services.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from hub.errors import InvalidInput, TooLarge

if TYPE_CHECKING:  # the settings module validates database URLs with SQLAlchemy
    from hub.settings import Settings


# The defaults of every size bound on a notification; settings may change the first four.
TITLE_MAX_CHARS = 200
BODY_MAX_CHARS = 5000
DATA_MAX_BYTES = 16 * 1024
MAX_RECIPIENTS = 1000
LINK_MAX_CHARS = 2000
# A notification may live from one second to ten years; past its retention it is purged anyway.
TTL_MIN_SECONDS = 1
TTL_MAX_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class NotificationLimits:
    """Input bounds, from Settings; checked here so every entry point enforces them."""

    title_max_chars: int = TITLE_MAX_CHARS
    body_max_chars: int = BODY_MAX_CHARS
    data_max_bytes: int = DATA_MAX_BYTES
    link_max_chars: int = LINK_MAX_CHARS
    max_recipients: int = MAX_RECIPIENTS

    @classmethod
    def from_settings(cls, settings: Settings) -> NotificationLimits:
        return cls(
            title_max_chars=settings.notification_title_max_chars,
            body_max_chars=settings.notification_body_max_chars,
            data_max_bytes=settings.notification_data_max_bytes,
            max_recipients=settings.notification_max_recipients,
        )


@dataclass(frozen=True, slots=True)
class NewNotification:
    """What a caller asks for; the service adds ids, seqs and timestamps."""

    title: str
    body: str
    category: str | None = None
    data: dict[str, Any] | None = None
    link: str | None = None
    # At most one of these: when the item leaves lists and counts (``ttl_seconds`` counts
    # from the moment it is stored).
    expires_at: datetime | None = None
    ttl_seconds: int | None = None

    def expiry(self, stored_at: datetime) -> datetime | None:
        if self.ttl_seconds is not None:
            return stored_at + timedelta(seconds=self.ttl_seconds)
        return self.expires_at


def check_expiry(notification: NewNotification, *, not_before: datetime | None) -> None:
    """``expires_at`` xor ``ttl_seconds``, ttl within bounds, ``expires_at`` with a time zone
    and after ``not_before`` (REST: now; an event: its ``occurred_at``, so that an event that
    waited in a queue is still applied, stored already expired, and never shown)."""
    expires_at, ttl = notification.expires_at, notification.ttl_seconds
    if expires_at is not None and ttl is not None:
        raise InvalidInput("give at most one of 'expires_at' and 'ttl_seconds'")
    if ttl is not None and not TTL_MIN_SECONDS <= ttl <= TTL_MAX_SECONDS:
        raise InvalidInput(
            f"ttl_seconds must be from {TTL_MIN_SECONDS} to {TTL_MAX_SECONDS} (ten years)"
        )
    if expires_at is None:
        return
    if expires_at.tzinfo is None:
        raise InvalidInput("expires_at needs a time zone (e.g. 2026-12-01T10:00:00Z)")
    if not_before is not None and not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=UTC)  # an envelope's occurred_at: UTC
    if not_before is not None and expires_at <= not_before:
        raise InvalidInput("expires_at is in the past")
    if not_before is not None and expires_at > not_before + timedelta(seconds=TTL_MAX_SECONDS):
        raise InvalidInput("expires_at is more than ten years ahead")


def check_limits(
    notification: NewNotification, recipients: int, limits: NotificationLimits
) -> None:
    if recipients == 0:
        raise InvalidInput("at least one recipient is needed")
    if recipients > limits.max_recipients:
        raise InvalidInput(f"at most {limits.max_recipients} recipients per request")
    if not notification.title.strip():
        raise InvalidInput("title must not be empty")
    if has_nul(notification.title, notification.body, notification.link, notification.category):
        raise InvalidInput("text must not contain NUL characters")
    if len(notification.title) > limits.title_max_chars:
        raise TooLarge(f"title is longer than {limits.title_max_chars} characters")
    if len(notification.body) > limits.body_max_chars:
        raise TooLarge(f"body is longer than {limits.body_max_chars} characters")
    if notification.link is not None and len(notification.link) > limits.link_max_chars:
        raise TooLarge(f"link is longer than {limits.link_max_chars} characters")
    if notification.data:
        encoded = orjson.dumps(notification.data)
        if len(encoded) > limits.data_max_bytes:
            raise TooLarge(f"data encodes to more than {limits.data_max_bytes} bytes of JSON")
        if b"\\u0000" in encoded:
            raise InvalidInput("data must not contain NUL characters")


def has_nul(*texts: str | None) -> bool:
    """PostgreSQL text cannot hold U+0000: such input is refused up front, not a 500."""
    return any(text is not None and "\x00" in text for text in texts)
