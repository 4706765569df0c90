"""The objects services hand back and clients receive, as typed records.

They are the JSON objects of docs/protocol.md (sections 5.1 and 6.1) exactly as encoded: a
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


class MessageRecord(TypedDict):
    id: str
    conversation_id: str
    sender_id: str
    body: str
    client_msg_id: str | None
    created_at: str
    seq: int


class ConversationRecord(TypedDict):
    id: str
    participants: list[str]
    last_message: MessageRecord | None
    unread_count: int
