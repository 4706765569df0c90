"""The objects services hand back and clients receive, as typed records.

They are the JSON objects of docs/protocol.md (sections 5.1, 6.1 and 9.2) exactly as encoded: a
service builds one from a row, the bus and the sockets send it unchanged, REST views check it
against the response models of :mod:`hub.responses`.
"""

from __future__ import annotations

from typing import Any, TypedDict


class NotificationRecord(TypedDict):
    id: str
    tenant_id: str
    user_id: str
    seq: int
    category: str | None
    title: str
    body: str
    data: dict[str, Any]
    link: str | None
    created_at: str
    read_at: str | None
    seen_at: str | None
    archived_at: str | None
    expires_at: str | None


class MessageRecord(TypedDict):
    id: str
    conversation_id: str
    sender_id: str
    body: str
    client_msg_id: str | None
    created_at: str
    seq: int
    edited_at: str | None
    deleted_at: str | None


class ConversationRecord(TypedDict):
    id: str
    participants: list[str]
    last_message: MessageRecord | None
    unread_count: int


class PresenceRecord(TypedDict):
    user_id: str
    status: str  # "online" or "offline"
    last_seen_at: str | None  # null while online


class EmailStatusChange(TypedDict):
    status: str
    attempt: int
    error: str | None
    at: str


class EmailStatusRecord(TypedDict):
    id: str
    status: str
    attempts: int
    last_error: str | None
    created_at: str
    sent_at: str | None
    to_email: str
    template_key: str
    history: list[EmailStatusChange]


# Socket.IO acknowledgements (docs/protocol.md sections 5 and 6); errors are
# ``{"ok": false, "error": ...}`` from the namespace base.


class OkAck(TypedDict):
    ok: bool


class MarkReadAck(OkAck):
    updated: int
    unread_count: int


class MessageSentAck(OkAck):
    message: MessageRecord


class MessageUpdatedAck(OkAck):
    message: MessageRecord


class MessageReadAck(OkAck):
    unread_count: int


class DeviceRecord(TypedDict):
    id: str
    kind: str
    created_at: str


class DeliveryRecord(TypedDict):
    """One email or push of a notification (``GET /api/notifications/{id}/deliveries/``)."""

    channel: str
    target: str
    status: str
    attempts: int
    last_error: str | None
    updated_at: str


class WebhookRecord(TypedDict):
    id: str
    url: str
    events: list[str]
    created_at: str


class WebhookAttemptRecord(TypedDict):
    attempt: int
    status_code: int | None
    error: str | None
    at: str


class WebhookDeliveryRecord(TypedDict):
    id: str
    message_id: str
    type: str
    status: str
    attempts: list[WebhookAttemptRecord]
    created_at: str
    updated_at: str


# Preferences (docs/protocol.md 5.4): ``GET``/``PATCH /api/preferences/``, ``preferences:updated``
# and, with ``locked``, the tenant's defaults.


class QuietHoursRecord(TypedDict):
    start: str
    end: str
    timezone: str


class ChannelSwitchesRecord(TypedDict):
    in_app: bool
    email: bool
    push: bool


class CategoryPreferencesRecord(TypedDict, total=False):
    """Only the channels someone decided for the category; ``locked`` only when any is."""

    in_app: bool
    email: bool
    push: bool
    locked: list[str]


class PreferencesRecord(TypedDict):
    channels: ChannelSwitchesRecord
    categories: dict[str, CategoryPreferencesRecord]
    quiet_hours: QuietHoursRecord | None
