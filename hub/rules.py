"""The rules a notification must satisfy, shared by the hub and by CRM modules.

``hub.producer`` (imported by CRM modules) checks events with these very functions before
publishing, so this module stays light: no database, no Redis, no hub services.
"""

from __future__ import annotations

from dataclasses import dataclass
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
