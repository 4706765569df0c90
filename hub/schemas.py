"""Request models shared by REST bodies, socket payloads and the OpenAPI document.

Descriptions and examples here only document; constraints validate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    StringConstraints,
    model_validator,
)

from hub import preferences, rules
from hub.vapid import b64url_decode

# Identifiers: no control characters (PostgreSQL refuses NUL; the rest only cause trouble).
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
NotificationId = Annotated[str | int, Field(union_mode="left_to_right")]


MAX_BROADCAST_DATA_BYTES = rules.DATA_MAX_BYTES


def _bounded_data(value: dict[str, Any]) -> dict[str, Any]:
    if len(orjson.dumps(value)) > MAX_BROADCAST_DATA_BYTES:
        raise ValueError(f"data must encode to at most {MAX_BROADCAST_DATA_BYTES} bytes of JSON")
    return value


BoundedData = Annotated[dict[str, Any], AfterValidator(_bounded_data)]

# Free text that is stored: anything but NUL, which PostgreSQL text and jsonb cannot hold.
TEXT_PATTERN = r"^[^\x00]*$"


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _storable_data(value: dict[str, Any]) -> dict[str, Any]:
    if _has_nul(value):
        raise ValueError("data must not contain NUL characters")
    return value


StoredData = Annotated[BoundedData, AfterValidator(_storable_data)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelectionIn(Strict):
    """``{"ids": [...]}`` or ``{"all": true}``: the notifications an inbox action applies to."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": 'Either `{"ids": [...]}` or `{"all": true}`, not both.',
            "oneOf": [
                {
                    "required": ["ids"],
                    "properties": {"ids": {"type": "array"}, "all": {"const": False}},
                },
                {
                    "required": ["all"],
                    "properties": {"all": {"const": True}, "ids": {"type": "null"}},
                },
            ],
            "examples": [{"ids": ["1042", "1043"]}, {"all": True}],
        }
    )

    ids: list[NotificationId] | None = Field(
        default=None,
        max_length=1000,
        description="Notification ids (at most 1,000); ids that are not the caller's are ignored",
    )
    all: StrictBool = Field(
        default=False,
        description="true: every notification the action applies to (archive: the read ones)",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if self.all == (self.ids is not None):
            raise ValueError("give either 'ids' or 'all': true")
        return self


class MarkReadIn(SelectionIn):
    """``{"ids": [...]}`` or ``{"all": true}`` (every unread one)."""


TtlSeconds = Annotated[int, Field(ge=rules.TTL_MIN_SECONDS, le=rules.TTL_MAX_SECONDS)]
EXPIRES_AT = Field(
    default=None,
    description="When the notification leaves lists and counts (ISO 8601 with a time zone; "
    "in the past: 400); give this or `ttl_seconds`, not both",
)
TTL_SECONDS = Field(
    default=None,
    description=f"Seconds from now until it expires ({rules.TTL_MIN_SECONDS} to "
    f"{rules.TTL_MAX_SECONDS:,}, ten years); give this or `expires_at`, not both",
)


class TenantSettingsIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"retention_days": 90, "chat_retention_days": 30, "chat_edit_window_seconds": 900}
            ]
        }
    )

    retention_days: Annotated[int, Field(ge=1, le=36500)] | None = Field(
        default=None,
        description="Purge notifications older than this many days (at most the hub's "
        "NOTIFYHUB_RETENTION_DAYS, which applies when null)",
    )
    chat_retention_days: Annotated[int, Field(ge=1, le=36500)] | None = Field(
        default=None, description="Purge chat messages older than this many days; null: keep"
    )
    chat_edit_window_seconds: Annotated[int, Field(ge=1, le=315_360_000)] | None = Field(
        default=None,
        description="Senders may edit a message this many seconds after sending it (at most "
        "the hub's NOTIFYHUB_CHAT_EDIT_WINDOW_SECONDS when that is set); null: the hub's",
    )


class CreateNotificationsIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_ids": ["u-42", "u-43"],
                    "title": "Deal won",
                    "body": "ACME Corp signed the contract.",
                    "category": "deals",
                    "data": {"deal_id": 981},
                    "link": "/deals/981",
                    "idempotency_key": "deal-981-won",
                }
            ]
        }
    )

    user_ids: list[UserId] = Field(
        min_length=1,
        description="Recipients, users of the caller's tenant (at most 1,000 by default, "
        "configurable; duplicates count once)",
    )
    title: str = Field(
        description="Must not be blank (400); at most 200 characters by default "
        "(configurable; longer is 413)",
        # Checked by the service (whose limits are configurable); documented here.
        json_schema_extra={"minLength": 1, "pattern": r"\S"},
    )
    body: str = Field(description="At most 5,000 characters by default (configurable; 413)")
    category: Annotated[str, StringConstraints(max_length=64)] | None = None
    data: dict[str, Any] | None = Field(
        default=None, description="Any JSON object, at most 16 KiB encoded by default (413)"
    )
    link: str | None = Field(default=None, description="At most 2,000 characters (413)")
    expires_at: datetime | None = EXPIRES_AT
    ttl_seconds: TtlSeconds | None = TTL_SECONDS
    idempotency_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN)] | None
    ) = Field(
        default=None,
        description="A repeated key returns the first request's ids and creates nothing",
    )
    send_at: datetime | None = Field(
        default=None,
        description="Not before then (ISO 8601 with an offset): the request is stored and "
        "answered 202 with an `event_id`, by which `POST /api/events/{event_id}/cancel/` "
        "cancels it until it is sent; nothing is stored as visible, emitted or pushed "
        "before then. Absent or in the past: now (201)",
    )

    def notification(self) -> rules.NewNotification:
        """What each recipient is to get."""
        return rules.NewNotification(
            title=self.title,
            body=self.body,
            category=self.category,
            data=self.data,
            link=self.link,
            expires_at=self.expires_at,
            ttl_seconds=self.ttl_seconds,
        )


class BroadcastIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Maintenance tonight",
                    "body": "The CRM is read-only from 22:00 to 22:30 UTC.",
                    "data": {"severity": "info"},
                }
            ]
        }
    )

    title: Annotated[str, StringConstraints(min_length=1, max_length=rules.TITLE_MAX_CHARS)]
    body: Annotated[str, StringConstraints(max_length=rules.BODY_MAX_CHARS)]
    data: BoundedData = Field(default_factory=dict)


Id = Annotated[str | int, Field(union_mode="left_to_right")]
ClientMessageId = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=ID_PATTERN)
]


class SendMessageIn(Strict):
    """``message:send`` / ``POST /api/messages/send/``: to a user, or into a conversation."""

    to_user_id: UserId | None = None
    conversation_id: Id | None = None
    body: str
    client_msg_id: ClientMessageId | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.to_user_id is None) == (self.conversation_id is None):
            raise ValueError("give exactly one of 'to_user_id' or 'conversation_id'")
        return self


class RestSendMessageIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"to_user_id": "u-43", "body": "Hi Bob!", "client_msg_id": "c-1f3a"}]
        }
    )

    to_user_id: UserId = Field(description="The other participant (not the caller: 400)")
    body: str = Field(
        description="1 to 4,000 characters by default (configurable; longer is 413), not "
        "blank (400)",
        # Checked by the chat service (whose limit is configurable); documented here.
        json_schema_extra={"minLength": 1, "pattern": r"\S"},
    )
    client_msg_id: ClientMessageId | None = Field(
        default=None,
        description="The client's id for retries: a repeat from the same sender returns the "
        "first message with 200",
    )


class RestEditMessageIn(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"body": "Hi Bob, sorry!"}]})

    body: str = Field(
        description="The new text: the same limits as a new message's",
        json_schema_extra={"minLength": 1, "pattern": r"\S"},
    )


class MessageEditIn(Strict):
    """``message:edit``: the sender replaces a message's body."""

    message_id: Id
    body: str


class MessageDeleteIn(Strict):
    """``message:delete``: the sender leaves a tombstone in place of a message."""

    message_id: Id


class AuthRefreshIn(BaseModel):
    """``auth:refresh``: a new token for the same tenant and user (other fields are ignored)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "eyJhbGciOiJIUzI1NiJ9..."}]}
    )

    token: StrictStr = Field(description="The new JWT; its `exp` replaces the old expiry")


class TypingIn(Strict):
    conversation_id: Id
    typing: StrictBool


class MessageReadIn(Strict):
    conversation_id: Id
    message_id: Id


class RestReadIn(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"message_id": "5001"}]})

    message_id: Id = Field(description="Read up to and including this message")


class SendEmailIn(Strict):
    """``POST /api/emails/send/``: the email task's arguments (``tenant_id`` optional)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "to_email": "ann@example.com",
                    "template_key": "deal_won",
                    "context": {"First Name": "Ann", "Deal": "ACME Corp"},
                }
            ]
        }
    )

    tenant_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Defaults to the token's tenant; any other tenant is 403"
    )
    to_email: Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=ID_PATTERN)]
    subject: Annotated[str, StringConstraints(max_length=998, pattern=TEXT_PATTERN)] | None = Field(
        default=None, description="Overrides the template's subject"
    )
    template_key: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN)
    ] = Field(description="Template of the tenant, from the auth service")
    context: StoredData = Field(
        default_factory=dict,
        description="Values of the template's `{{ Placeholder }}` fields (keys may contain "
        "spaces); no NUL characters",
    )


# -- push devices ------------------------------------------------------------------------------

Base64Url = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+=*$")
]


class WebPushKeys(Strict):
    p256dh: Base64Url = Field(description="The browser's P-256 public key (65 bytes, base64url)")
    auth: Base64Url = Field(description="The 16-byte authentication secret (base64url)")

    def check_lengths(self) -> None:
        """Keys that cannot encrypt are refused now, not found out at every push."""
        try:
            public, secret = b64url_decode(self.p256dh), b64url_decode(self.auth)
        except ValueError:
            raise ValueError("subscription keys must be base64url") from None
        if len(public) != 65 or public[0] != 4:
            raise ValueError("keys.p256dh must be an uncompressed P-256 point (65 bytes)")
        if len(secret) != 16:
            raise ValueError("keys.auth must be 16 bytes")


class WebPushSubscription(Strict):
    """What ``PushSubscription.toJSON()`` gives in the browser (``expirationTime`` ignored)."""

    model_config = ConfigDict(extra="ignore")

    endpoint: Annotated[
        str, StringConstraints(min_length=8, max_length=2000, pattern=r"^https?://[^\s\x00-\x1f]+$")
    ]
    keys: WebPushKeys


class RegisterDeviceIn(Strict):
    """``POST /api/devices/``: a browser's Web Push subscription or a phone's token."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "webpush",
                    "subscription": {
                        "endpoint": "https://push.example.net/send/abc",
                        "keys": {
                            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0"
                            "VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
                            "auth": "tBHItJI5svbpez7KI4CCXg",
                        },
                    },
                },
                {"kind": "fcm", "token": "dGVzdC10b2tlbg"},
            ]
        }
    )

    kind: Literal["webpush", "fcm", "apns"]
    subscription: WebPushSubscription | None = None
    token: (
        Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_target(self) -> RegisterDeviceIn:
        if self.kind == "webpush" and (self.subscription is None or self.token is not None):
            raise ValueError("a webpush device gives 'subscription' (and no 'token')")
        if self.kind != "webpush" and (self.token is None or self.subscription is not None):
            raise ValueError(f"an {self.kind} device gives 'token' (and no 'subscription')")
        if self.subscription is not None:
            self.subscription.keys.check_lengths()
        return self


# -- webhooks ------------------------------------------------------------------------------------


class CreateWebhookIn(Strict):
    """``POST /api/webhooks/``: where to send which events."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://crm.example.com/hooks/notifyhub",
                    "events": ["notification.read", "email.failed"],
                }
            ]
        }
    )

    url: Annotated[str, StringConstraints(min_length=8, max_length=2000, pattern=r"^https?://\S+$")]
    events: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        min_length=1,
        max_length=16,
        description="Any of notification.created, notification.read, email.sent, "
        "email.failed, push.failed, message.created",
    )


# -- preferences (docs/protocol.md 5.4) --------------------------------------------------------

CategoryName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=preferences.CATEGORY_MAX_CHARS, pattern=ID_PATTERN),
]
ClockTime = Annotated[
    str,
    StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$"),
    Field(description="24-hour local time, `HH:MM`", examples=["22:00"]),
]


def _known_time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: not a relative path (zoneinfo refuses "../x"); OSError: a directory of
        # the zone database ("America") rather than a zone.
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Paris"
        ) from None
    return name


TimeZoneName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$"),
    AfterValidator(_known_time_zone),
    Field(description="An IANA time zone name", examples=["Europe/Paris"]),
]


class QuietHoursIn(Strict):
    """Stored and returned; ``start`` after ``end`` spans midnight."""

    start: ClockTime
    end: ClockTime
    timezone: TimeZoneName

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("quiet hours must start and end at different times")
        return self


class ChannelSwitchesIn(Strict):
    """Per channel: true (wanted), false (not wanted), null (forget the switch: the next rule
    of the resolution order decides). A channel not named is left as it is."""

    in_app: StrictBool | None = None
    email: StrictBool | None = None
    push: StrictBool | None = None


class TenantCategoryIn(ChannelSwitchesIn):
    locked: list[preferences.Channel] = Field(
        default_factory=list,
        max_length=len(preferences.CHANNELS),
        description="Channels users cannot turn off for this category",
    )


class PreferencesPatchIn(Strict):
    """``PATCH /api/preferences/``: any part of the preferences object, merged."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "channels": {"email": False},
                    "categories": {"deals": {"email": True}, "tasks": None},
                    "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"},
                }
            ]
        }
    )

    channels: ChannelSwitchesIn | None = None
    categories: dict[CategoryName, ChannelSwitchesIn | None] | None = Field(
        default=None,
        max_length=preferences.MAX_CATEGORIES,
        description="Per category: switches merged into the user's override, or null to "
        f"remove the override (at most {preferences.MAX_CATEGORIES} categories)",
    )
    quiet_hours: QuietHoursIn | None = Field(default=None, description="null removes them")


class TenantPreferencesIn(Strict):
    """``PUT /api/tenant/preferences/``: the tenant's defaults, replaced as a whole."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "channels": {"push": False},
                    "categories": {
                        "security": {"email": True, "locked": ["in_app", "email"]},
                        "marketing": {"email": False},
                    },
                    "quiet_hours": None,
                }
            ]
        }
    )

    channels: ChannelSwitchesIn = Field(default_factory=ChannelSwitchesIn)
    categories: dict[CategoryName, TenantCategoryIn] = Field(
        default_factory=dict, max_length=preferences.MAX_CATEGORIES
    )
    quiet_hours: QuietHoursIn | None = None
