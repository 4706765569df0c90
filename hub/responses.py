"""Response models: the JSON every REST route answers with, and (through them) the OpenAPI
document's response schemas.

Views shape their replies through these models (``Model.model_validate(...).model_dump(
mode="json")``), so the published schema and the bytes on the wire come from one
definition. Unknown keys a service might add are dropped rather than leaked: a field
reaches clients only once it is declared here (and therefore documented).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

Timestamp = Annotated[
    str,
    Field(
        description="ISO 8601 UTC timestamp",
        json_schema_extra={"format": "date-time", "examples": ["2025-03-01T09:30:00.123456Z"]},
    ),
]
Cursor = Annotated[
    str | None,
    Field(
        description="Opaque cursor of the next (older) page; null on the last page. "
        "Pass it back unchanged as the `cursor` query parameter."
    ),
]
Count = Annotated[int, Field(ge=0)]


class Out(BaseModel):
    """Base of every response model."""

    model_config = ConfigDict(extra="ignore")


# -- notifications ----------------------------------------------------------------------------


class Notification(Out):
    """One stored notification of one user."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "1042",
                    "tenant_id": "acme",
                    "user_id": "u-42",
                    "seq": 17,
                    "category": "deals",
                    "title": "Deal won",
                    "body": "ACME Corp signed the contract.",
                    "data": {"deal_id": 981},
                    "link": "/deals/981",
                    "created_at": "2025-03-01T09:30:00.123456Z",
                    "read_at": None,
                    "seen_at": "2025-03-01T09:31:00.123456Z",
                    "archived_at": None,
                    "expires_at": None,
                }
            ]
        }
    )

    id: str = Field(description="Notification id (a string)")
    tenant_id: str
    user_id: str
    seq: int = Field(
        ge=1, description="Per-user sequence number, +1 per new notification (resume cursor)"
    )
    category: str | None
    title: str
    body: str
    data: dict[str, Any] = Field(description="Free-form JSON object given by the producer")
    link: str | None
    created_at: Timestamp
    read_at: Timestamp | None = Field(description="null while unread")
    seen_at: Timestamp | None = Field(
        default=None, description="null while unseen (reading also sets it, if unset)"
    )
    archived_at: Timestamp | None = Field(default=None, description="null unless archived")
    expires_at: Timestamp | None = Field(
        default=None,
        description="null: never expires; past it the item is gone from lists and counts",
    )


UNREAD_COUNT = "The caller's unread notifications, all categories (not archived, not expired)"
UNSEEN_COUNT = "The caller's unseen notifications, all categories (not archived, not expired)"


class NotificationPage(Out):
    items: list[Notification] = Field(description="Newest first")
    next_cursor: Cursor
    unread_count: Count = Field(description=UNREAD_COUNT)
    unseen_count: Count = Field(description=UNSEEN_COUNT)


class UnreadCount(Out):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"unread_count": 3, "unseen_count": 1}]}
    )

    unread_count: Count = Field(description=UNREAD_COUNT)
    unseen_count: Count = Field(description=UNSEEN_COUNT)


class InboxChangeResult(Out):
    """What mark-as-seen, mark-as-unread, archive, unarchive and delete answer."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"updated": 2, "unread_count": 1, "unseen_count": 0}]}
    )

    updated: Count = Field(
        description="The caller's notifications this request changed (ids already in that "
        "state, not the caller's or unknown count for nothing)"
    )
    unread_count: Count = Field(description=UNREAD_COUNT)
    unseen_count: Count = Field(description=UNSEEN_COUNT)


class TenantSettings(Out):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"retention_days": 90, "chat_retention_days": 30, "chat_edit_window_seconds": 900}
            ]
        }
    )

    retention_days: int | None = Field(
        description="Notifications older than this are purged; null: the hub's "
        "NOTIFYHUB_RETENTION_DAYS (never more than it)"
    )
    chat_retention_days: int | None = Field(
        description="Chat messages older than this are purged; null: kept"
    )
    chat_edit_window_seconds: int | None = Field(
        description="How long after sending a message may be edited (the shorter of this and "
        "the hub's NOTIFYHUB_CHAT_EDIT_WINDOW_SECONDS applies); null: the hub's"
    )


class MarkReadResult(Out):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"updated": 2, "unread_count": 1, "unseen_count": 0}]}
    )

    updated: Count = Field(description="Notifications that went from unread to read")
    unread_count: Count = Field(description=UNREAD_COUNT)
    unseen_count: Count = Field(description=UNSEEN_COUNT)


class CreatedNotifications(Out):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"ids": ["1042", "1043"], "suppressed": ["u-44"]}]}
    )

    ids: list[str] = Field(
        description="One id per distinct recipient who wants it; the same ids again for a "
        "repeated idempotency key"
    )
    suppressed: list[str] = Field(
        description="Recipients who got nothing: their preferences turn `in_app` off for the "
        "notification's category (or, without a category, turn `in_app` off)"
    )


class BroadcastAccepted(Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "accepted"}]})

    status: Literal["accepted"]


# -- chat -------------------------------------------------------------------------------------


class Message(Out):
    """One chat message."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5001",
                    "conversation_id": "77",
                    "sender_id": "u-42",
                    "body": "Hi Bob!",
                    "client_msg_id": "c-1f3a",
                    "created_at": "2025-03-01T09:30:00.123456Z",
                    "seq": 4,
                    "edited_at": None,
                    "deleted_at": None,
                }
            ]
        }
    )

    id: str
    conversation_id: str
    sender_id: str
    body: str
    client_msg_id: str | None
    created_at: Timestamp
    seq: int = Field(ge=1, description="+1 per message of its conversation")
    edited_at: Timestamp | None = Field(description="The last edit; null if never edited")
    deleted_at: Timestamp | None = Field(
        description="Set once the sender deleted it (a tombstone: `body` is empty)"
    )


class SentMessage(Out):
    message: Message


class Conversation(Out):
    id: str
    participants: list[str] = Field(description="Both user ids, sorted")
    last_message: Message | None
    unread_count: Count = Field(description="The caller's unread messages in it")


class ConversationPage(Out):
    items: list[Conversation] = Field(description="Most recently active first")
    next_cursor: Cursor


class MessagePage(Out):
    items: list[Message] = Field(description="Newest first")
    next_cursor: Cursor


class Presence(Out):
    """``presence``, and an item of ``GET /api/presence/``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "u-43", "status": "offline", "last_seen_at": "2025-03-01T09:41:07Z"}
            ]
        }
    )

    user_id: str
    status: Literal["online", "offline"] = Field(
        description="`online` while any of the user's `/chat` sockets is connected on any "
        "node; `offline` after `NOTIFYHUB_PRESENCE_GRACE_SECONDS` without one"
    )
    last_seen_at: Timestamp | None = Field(
        description="When the user was last connected; null while online or never seen"
    )


class PresencePage(Out):
    items: list[Presence] = Field(description="One per user asked for, in that order")


class ReadReceiptResult(Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{"ok": True, "unread_count": 0}]})

    ok: Literal[True]
    unread_count: Count = Field(description="The caller's unread messages in the conversation")


# -- events and email -------------------------------------------------------------------------


class EventAccepted(Out):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"event_id": "deal-981-won", "duplicate": False}]}
    )

    event_id: str
    duplicate: bool = Field(description="true when this event had been applied before")


class ScheduledNotifications(Out):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "3f1c2d0b8e9a4c7d9b6e5a4f3c2d1e0f",
                    "send_at": "2026-12-02T08:00:00Z",
                    "duplicate": False,
                }
            ]
        }
    )

    event_id: str = Field(
        description="Cancels it until it is sent: `POST /api/events/{event_id}/cancel/`"
    )
    send_at: str = Field(description="When it is sent, ISO 8601 in UTC")
    duplicate: bool = Field(
        description="true for a repeated idempotency key: the first request's schedule"
    )


class Cancelled(Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{"cancelled": True}]})

    cancelled: bool


EmailState = Literal["queued", "sending", "sent", "retrying", "failed"]


class EmailQueued(Out):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "3f2b9c0e5d7a4e8f9a1b2c3d4e5f6a7b"}]}
    )

    id: str = Field(description="Email id, for GET /api/emails/{email_id}/")


class EmailAttempt(Out):
    status: EmailState
    attempt: int = Field(ge=0)
    error: str | None
    at: Timestamp


class EmailStatus(Out):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2b9c0e5d7a4e8f9a1b2c3d4e5f6a7b",
                    "status": "sent",
                    "attempts": 1,
                    "last_error": None,
                    "created_at": "2025-03-01T09:30:00.123456Z",
                    "sent_at": "2025-03-01T09:30:01.004211Z",
                    "to_email": "ann@example.com",
                    "template_key": "deal_won",
                    "history": [
                        {
                            "status": "queued",
                            "attempt": 0,
                            "error": None,
                            "at": "2025-03-01T09:30:00.123456Z",
                        },
                        {
                            "status": "sending",
                            "attempt": 1,
                            "error": None,
                            "at": "2025-03-01T09:30:00.501234Z",
                        },
                        {
                            "status": "sent",
                            "attempt": 1,
                            "error": None,
                            "at": "2025-03-01T09:30:01.004211Z",
                        },
                    ],
                }
            ]
        }
    )

    id: str
    status: EmailState
    attempts: Count = Field(description="Delivery attempts so far")
    last_error: str | None
    created_at: Timestamp
    sent_at: Timestamp | None
    to_email: str
    template_key: str
    history: list[EmailAttempt] = Field(description="Every status change, oldest first")


# -- errors and operations --------------------------------------------------------------------


class ErrorDetail(Out):
    code: str = Field(
        description="Stable machine-readable code, e.g. validation_error, invalid_json, "
        "invalid_cursor, unauthorized, forbidden, not_found, payload_too_large, "
        "rate_limited, unavailable"
    )
    message: str = Field(description="Human-readable explanation")
    details: Any = Field(
        default=None,
        description="Extra data or null: for validation_error a list of "
        '`{"loc", "msg", "type"}`; for rate_limited `{"retry_after": seconds}`',
    )


class Error(Out):
    """Every REST error: ``{"error": {"code", "message", "details"}}``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "validation_error",
                        "message": "request is not valid",
                        "details": [{"loc": ["title"], "msg": "Field required", "type": "missing"}],
                    }
                }
            ]
        },
    )

    error: ErrorDetail


class Health(Out):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"]


class Ready(Out):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "checks": {"database": "ok", "schema": "ok", "redis": "ok"}}
            ]
        }
    )

    status: Literal["ok"]
    checks: dict[str, str] = Field(description='Each configured dependency: "ok"')


class NotReady(Out):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "unavailable",
                    "failing": ["redis"],
                    "checks": {
                        "database": "ok",
                        "schema": "ok",
                        "redis": "error: ConnectionError: connection refused",
                    },
                }
            ]
        }
    )

    status: Literal["unavailable"]
    failing: list[str] = Field(description="Names of the dependencies that do not answer")
    checks: dict[str, str] = Field(description='Each configured dependency: "ok" or the error')


# -- preferences ------------------------------------------------------------------------------

_PREFERENCES_EXAMPLE: dict[str, Any] = {
    "channels": {"in_app": True, "email": False, "push": True},
    "categories": {
        "deals": {"email": True},
        "security": {"in_app": True, "email": True, "locked": ["in_app", "email"]},
    },
    "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Paris"},
}


class ChannelSwitches(Out):
    in_app: bool
    email: bool
    push: bool


class QuietHours(Out):
    start: str = Field(description="`HH:MM`, local time")
    end: str = Field(description="`HH:MM`, local time; before `start` spans midnight")
    timezone: str = Field(description="IANA time zone name")


class CategoryPreferences(Out):
    """The channels someone decided for a category (absent: the channel switches decide)."""

    in_app: bool | None = None
    email: bool | None = None
    push: bool | None = None
    locked: list[Literal["in_app", "email", "push"]] | None = Field(
        default=None, description="Channels the tenant locked on (shown on, whatever the user set)"
    )


class Preferences(Out):
    """A user's effective preferences: ``GET``/``PATCH /api/preferences/`` and the
    ``preferences:updated`` event."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PREFERENCES_EXAMPLE]})

    channels: ChannelSwitches = Field(description="Resolved for notifications of no category")
    categories: dict[str, CategoryPreferences]
    quiet_hours: QuietHours | None


class TenantPreferences(Out):
    """A tenant's defaults, as stored (channel defaults not set are on)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PREFERENCES_EXAMPLE]})

    channels: ChannelSwitches
    categories: dict[str, CategoryPreferences]
    quiet_hours: QuietHours | None


class Unsubscribed(Out):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"unsubscribed": True, "category": "deals"}]}
    )

    unsubscribed: Literal[True]
    category: str = Field(description="The category whose email is now off")


# -- Socket.IO: server events and acks --------------------------------------------------------
# What the hub emits on /notifications and /chat, and what it acks client events with. The
# services build these payloads as dicts; the models are their published shape, which the
# AsyncAPI document (api/asyncapi.py) is generated from.

_AT = "2025-03-01T09:31:00.123456Z"


def _example(value: dict[str, Any]) -> ConfigDict:
    """The config of a model whose JSON Schema shows ``value`` as its example."""
    return ConfigDict(json_schema_extra={"examples": [value]})


class NotificationsReadIds(Out):
    model_config = _example({"ids": ["1042", "1043"], "unread_count": 3})

    ids: list[str] = Field(description="The notifications that went from unread to read")
    unread_count: Count = Field(description="The user's unread notifications after the change")


class NotificationsReadAll(Out):
    model_config = _example({"all": True, "unread_count": 0})

    all: Literal[True] = Field(description="Every unread notification was marked read")
    unread_count: Count = Field(description="The user's unread notifications after the change")


class NotificationsRead(RootModel[NotificationsReadIds | NotificationsReadAll]):
    """``notification:read``: sent to every connection of the user, whoever marked."""


class InboxChanges(Out):
    """What changed on every notification the event names (absent: unchanged)."""

    read_at: Timestamp | None = Field(default=None, description="Read (a time) or unread (null)")
    seen_at: Timestamp | None = Field(default=None, description="Seen at this time")
    archived_at: Timestamp | None = Field(
        default=None, description="Archived (a time) or unarchived (null)"
    )
    deleted: Literal[True] | None = Field(default=None, description="Deleted for good")
    data: dict[str, Any] | None = Field(
        default=None,
        description="The notification's whole new `data`: a digest gathered one more event "
        '(`data.digest` is `{"key", "count", "events"}`, the newest 50 events first)',
    )


class NotificationsUpdated(Out):
    """``notification:updated``: sent to every connection of the user on every change
    (read, unread, seen, archived, unarchived, deleted, a digest's new data), whoever made
    it; after a replay,
    with no ids and no changes, to give the current counts."""

    model_config = _example(
        {
            "ids": ["1042"],
            "changes": {"archived_at": _AT},
            "unread_count": 3,
            "unseen_count": 1,
        }
    )

    ids: list[str] | None = Field(
        default=None, description="The notifications that changed (absent when `all` is set)"
    )
    all: Literal[True] | None = Field(
        default=None, description="Every notification the action applies to changed"
    )
    changes: InboxChanges
    unread_count: Count = Field(description="The user's unread notifications after the change")
    unseen_count: Count = Field(description="The user's unseen notifications after the change")


class Broadcast(Out):
    """``broadcast``: a tenant-wide announcement; not stored, never replayed."""

    model_config = _example({"title": "Release 4.2", "body": "Reports load faster.", "data": {}})

    title: str
    body: str
    data: dict[str, Any] = Field(description="Free-form JSON object; `{}` when none was given")


class MessageReadReceipt(Out):
    """``message:read``: a participant read the conversation up to ``message_id``."""

    model_config = _example(
        {"conversation_id": "77", "user_id": "u-43", "message_id": "5001", "read_at": _AT}
    )

    conversation_id: str
    user_id: str = Field(description="The reader")
    message_id: str = Field(description="Read up to and including this message")
    read_at: Timestamp


class TypingIndicator(Out):
    """``typing``: relayed to the other participant only."""

    model_config = _example({"conversation_id": "77", "user_id": "u-42", "typing": True})

    conversation_id: str
    user_id: str = Field(description="The typer")
    typing: bool


class Ack(Out):
    """A successful event's ack; ``{"ok": true}`` alone where there is nothing more to say."""

    ok: Literal[True]


class MarkReadAck(Ack):
    model_config = _example({"ok": True, "updated": 2, "unread_count": 1})

    updated: Count = Field(description="Notifications that went from unread to read")
    unread_count: Count


class SendMessageAck(Ack):
    message: Message = Field(
        description="The stored message (the first one, for a repeated `client_msg_id`)"
    )


class MessageChangedAck(Ack):
    message: Message = Field(description="The message as it is now")


class TokenRefreshed(Ack):
    model_config = _example({"ok": True, "expires_at": 1764589000})

    expires_at: int = Field(description="The new token's `exp`, seconds since the epoch")


class AckError(Out):
    """Every failed event's ack: ``{"ok": false, "error": {"code", "message", "details"?}}``."""

    model_config = _example(
        {"ok": False, "error": {"code": "not_found", "message": "conversation not found"}}
    )

    ok: Literal[False]
    error: ErrorDetail


# -- push ---------------------------------------------------------------------------------------


class Device(Out):
    model_config = _example(
        {
            "id": "6c1f0e2a9b8d4c3e8f7a6b5c4d3e2f1a",
            "kind": "webpush",
            "created_at": "2026-12-01T09:30:00Z",
        }
    )

    id: str = Field(description="Device id, for DELETE /api/devices/{device_id}/")
    kind: Literal["webpush", "fcm", "apns"]
    created_at: Timestamp


class DeviceList(Out):
    items: list[Device]


class VapidPublicKey(Out):
    model_config = _example(
        {
            "public_key": "BEl62iUYgUivxIkv69yViEuiBIa-Ib9-SkvMeAtA3LFgDzkrxZJjSgSnfckjBJuBkr3"
            "qBUYIHBQFLXYp5Nksh8U"
        }
    )

    public_key: str = Field(
        description="The VAPID public key (base64url), the `applicationServerKey` of "
        "`pushManager.subscribe`"
    )


class Delivery(Out):
    channel: Literal["email", "push"]
    target: str = Field(description="`kind:device_id` for a push, the address for an email")
    status: str = Field(
        description="queued, sending, sent, retrying, failed; for a push also gone (the "
        "device was removed) or skipped (the user was connected)"
    )
    attempts: Count
    last_error: str | None
    updated_at: Timestamp


class DeliveryList(Out):
    model_config = _example(
        {
            "items": [
                {
                    "channel": "push",
                    "target": "webpush:6c1f0e2a9b8d4c3e8f7a6b5c4d3e2f1a",
                    "status": "sent",
                    "attempts": 1,
                    "last_error": None,
                    "updated_at": "2026-12-01T09:30:01Z",
                }
            ]
        }
    )

    items: list[Delivery]


# -- webhooks ------------------------------------------------------------------------------------


class Webhook(Out):
    id: str
    url: str
    events: list[str]
    created_at: Timestamp


class WebhookCreated(Webhook):
    model_config = _example(
        {
            "id": "0b4f5e6a7c8d9e0f1a2b3c4d5e6f7a8b",
            "url": "https://crm.example.com/hooks/notifyhub",
            "events": ["email.failed", "notification.read"],
            "created_at": "2026-12-01T09:30:00Z",
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        }
    )

    secret: str = Field(
        description="Signs every delivery (Standard Webhooks `webhook-signature`); shown "
        "only here, keep it"
    )


class WebhookList(Out):
    items: list[Webhook]


class WebhookAttemptOut(Out):
    attempt: int
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer")
    error: str | None
    at: Timestamp


class WebhookDeliveryOut(Out):
    id: str
    message_id: str = Field(description="The `webhook-id` header, the same on every attempt")
    type: str
    status: str = Field(description="queued, sending, sent, retrying, failed or cancelled")
    attempts: list[WebhookAttemptOut]
    created_at: Timestamp
    updated_at: Timestamp


class WebhookDeliveryPage(Out):
    items: list[WebhookDeliveryOut]
    next_cursor: Cursor


# -- data rights ------------------------------------------------------------------------------


class ExportedPreferences(Out):
    """What the user set themselves (not the tenant's defaults, not the resolved result)."""

    channels: dict[str, bool]
    categories: dict[str, Any]
    quiet_hours: dict[str, Any] | None
    updated_at: Timestamp


class ExportedDevice(Out):
    id: str
    kind: Literal["webpush", "fcm", "apns"]
    endpoint: str | None = Field(
        default=None, description="A Web Push subscription's endpoint (its keys are not exported)"
    )
    token: str | None = Field(default=None, description="An FCM or APNs device token")
    created_at: Timestamp


class ExportedConversation(Out):
    id: str
    peer_id: str = Field(description="The other participant")
    created_at: Timestamp
    last_activity_at: Timestamp
    last_read_seq: int = Field(ge=0, description="The user's read pointer")
    unread_count: Count


class ExportedPush(Out):
    id: str
    notification_id: str
    device_id: str
    kind: str
    status: str = Field(description="queued, sending, sent, retrying, failed or gone")
    attempts: Count
    last_error: str | None
    created_at: Timestamp
    updated_at: Timestamp


class ExportedEmail(Out):
    id: str
    to_email: str = Field(description="Empty once the user was erased")
    subject: str | None
    template_key: str
    context: dict[str, Any] = Field(description="The template's fields")
    category: str | None
    status: str = Field(description="queued, sending, sent, retrying or failed")
    attempts: Count
    last_error: str | None
    created_at: Timestamp
    sent_at: Timestamp | None
    notification_id: str | None = Field(description="The notification it went with, if any")


class ExportedDigestWindow(Out):
    key: str
    status: str = Field(description="open or closed")
    opened_at: Timestamp
    closes_at: Timestamp
    notification_id: str | None = Field(description="The in-app notification it updates")
    count: Count
    events: list[dict[str, Any]] = Field(description="The gathered events, newest first")
    email: dict[str, Any] | None = Field(description="The email sent when it closes, if any")


class ExportedScheduledEvent(Out):
    event_id: str
    type: str | None
    send_at: Timestamp
    recipient: dict[str, Any] = Field(description="The user's entry among the recipients")
    notification: dict[str, Any] | None
    email: dict[str, Any] | None
    digest: dict[str, Any] | None


class UserExport(Out):
    """Everything the hub holds about one user of the tenant (GDPR article 15), in this key
    order; streamed, so its size has no bound but the data."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u-42",
                    "tenant_id": "acme",
                    "exported_at": "2026-12-01T18:00:00.123456Z",
                    "preferences": None,
                    "devices": [],
                    "conversations": [],
                    "notifications": [],
                    "push_deliveries": [],
                    "messages": [],
                    "emails": [],
                    "digest_windows": [],
                    "scheduled_events": [],
                }
            ]
        }
    )

    user_id: str
    tenant_id: str
    exported_at: Timestamp
    preferences: ExportedPreferences | None = Field(
        description="The user's own preferences; null if they never set any"
    )
    devices: list[ExportedDevice] = Field(description="Push devices, by id")
    conversations: list[ExportedConversation] = Field(description="By id")
    notifications: list[Notification] = Field(description="Stored notifications, by seq")
    push_deliveries: list[ExportedPush] = Field(description="Pushes of those notifications")
    messages: list[Message] = Field(
        description="Every message of the user's conversations (sent and received), by "
        "conversation then seq"
    )
    emails: list[ExportedEmail] = Field(description="Emails made for the user, by id")
    digest_windows: list[ExportedDigestWindow] = Field(description="By key")
    scheduled_events: list[ExportedScheduledEvent] = Field(
        description="Events scheduled for later that name the user, by when they were stored "
        "(only the user's part: other recipients are left out)"
    )


class ErasureCounts(Out):
    notifications: Count = Field(description="Notifications deleted")
    push_deliveries: Count = Field(description="Their pushes deleted")
    devices: Count = Field(description="Push devices deleted")
    preferences: Count = Field(description="1 if the user's own preferences were deleted")
    messages: Count = Field(description="Sent messages emptied into `deleted_at` tombstones")
    emails: Count = Field(description="Email records whose address and content were erased")
    webhook_deliveries: Count = Field(
        description="Webhook deliveries whose payload was erased (those not sent: cancelled)"
    )
    digest_windows: Count = Field(description="The user's digest windows deleted")
    scheduled_events: Count = Field(
        description="Events scheduled for later the user was removed from, pending or sent (a "
        "pending one with no other recipient is cancelled)"
    )


class UserErased(Out):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "erased": {
                        "notifications": 120,
                        "push_deliveries": 4,
                        "devices": 2,
                        "preferences": 1,
                        "messages": 35,
                        "emails": 7,
                        "webhook_deliveries": 3,
                        "digest_windows": 1,
                        "scheduled_events": 0,
                    }
                }
            ]
        }
    )

    erased: ErasureCounts = Field(description="Rows of each kind erased (all 0 the second time)")
