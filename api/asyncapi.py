"""``GET /api/asyncapi.json``: the AsyncAPI 3.0 document of the realtime protocol.

Like :mod:`api.openapi`, the document is generated, never kept by hand. :data:`NAMESPACES`
names, for each Socket.IO namespace, every event a client emits (the model its handler
validates the payload with, from :mod:`hub.schemas`, and the model of its ack) and every
event the hub emits (the model of its payload, from :mod:`hub.responses`). The Kafka topics
carry :class:`~hub.intake.envelope.EventEnvelope`, the model intake validates with, and dead
letters with :class:`~hub.intake.envelope.KafkaDeadLetterHeaders`. Pydantic turns the models
into JSON Schema through :func:`api.openapi.model_schemas` (``components.schemas``).

Operations are from the hub's point of view: a client event is ``receive`` (its ack is the
reply), a server event is ``send``. The document depends on the settings only through the
topic names and default hosts, and is built once per such set and served as bytes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from api.openapi import API_VERSION, model_schemas
from hub import responses as out
from hub import schemas
from hub.intake.envelope import MAX_EVENT_BYTES, EventEnvelope, KafkaDeadLetterHeaders
from hub.keys import SETTINGS
from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from hub.settings import Settings

ASYNCAPI_VERSION = "3.0.0"
SOCKETIO_PATH = "/socket.io/"
SOCKETIO_SERVER = "socketio"
KAFKA_SERVER = "kafka"
SECURITY_SCHEME = "jwt"
ACK_ERROR = "ackError"  # the message every failed ack is, on both namespaces
KAFKA_BINDING_VERSION = "0.5.0"


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """An event clients emit and the namespace handles (method ``on_<name with : as _>``)."""

    name: str
    payload: type[BaseModel]  # the model the handler validates the payload with
    ack: type[BaseModel]  # the ack when it succeeds; a failure is always ``AckError``
    summary: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """An event the hub emits to the namespace's clients."""

    name: str
    payload: type[BaseModel]
    summary: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Namespace:
    key: str  # the channel's id in the document
    address: str
    title: str
    description: str
    receives: tuple[ClientEvent, ...]
    sends: tuple[ServerEvent, ...]


# -- the events -------------------------------------------------------------------------------

AUTH_REFRESH = ClientEvent(
    "auth:refresh",
    schemas.AuthRefreshIn,
    out.TokenRefreshed,
    "Replace the connection's token before it expires",
    "The new token must be for the same tenant and user (else `forbidden`); a refused one "
    "is `unauthorized`, and the connection keeps its old token and expiry. Each namespace "
    "connection keeps its own expiry and is disconnected by the server when it passes.",
)

NAMESPACES: tuple[Namespace, ...] = (
    Namespace(
        "notifications",
        NOTIFICATIONS_NAMESPACE,
        "Notification center",
        "A user's notifications: replay after `last_seq` and live `notification:new`, read "
        "marks and every other inbox change on every device, tenant announcements. Connect `auth`: "
        '`{"token": "<jwt>", "last_seq": 41}` (`last_seq` optional: with it, every stored '
        "notification with a larger `seq` is sent first, oldest first; a `last_seq` that is "
        "not a non-negative integer refuses the connection with `bad_request`).",
        receives=(
            ClientEvent(
                "notification:mark_read",
                schemas.MarkReadIn,
                out.MarkReadAck,
                "Mark notifications as read",
                "Ids that are not the caller's are ignored, never revealed. Every connection "
                "of the user, this one included, then receives `notification:read`.",
            ),
            AUTH_REFRESH,
        ),
        sends=(
            ServerEvent(
                "notification:new",
                out.Notification,
                "A stored notification, in `seq` order",
                "To every connection of the recipient: on one connection each `seq` arrives "
                "once, in order and without gaps (after a replay, from `last_seq` + 1).",
            ),
            ServerEvent(
                "notification:read",
                out.NotificationsRead,
                "Notifications of the user were marked read (by a socket or REST)",
                "`ids` lists only those that went from unread to read (not sent when none "
                'did); `{"all": true}` is sent for every "mark all".',
            ),
            ServerEvent(
                "notification:updated",
                out.NotificationsUpdated,
                "Notifications of the user changed, with the new counts",
                "To every connection of the user on every change, whoever made it (a socket or "
                "REST): read (after `notification:read`), unread, seen, archived, unarchived, "
                'deleted. `changes` holds what changed (`"read_at": null` is unread, '
                '`"archived_at": null` unarchived). After the replay that follows a connect with '
                '`last_seq`, one is sent with `"ids": []` and `"changes": {}`: the current '
                "counts (what changed while the client was away is not replayed: read the list "
                "over REST).",
            ),
            ServerEvent(
                "broadcast",
                out.Broadcast,
                "An announcement to every connected socket of the tenant",
                "From `POST /api/broadcasts/`; not stored, never replayed.",
            ),
            ServerEvent(
                "preferences:updated",
                out.Preferences,
                "The user's notification preferences changed",
                "To every `/notifications` socket of the user, on every node, after "
                "`PATCH /api/preferences/` or an unsubscribe link: the new effective "
                "preferences, the object `GET /api/preferences/` returns. Not replayed.",
            ),
        ),
    ),
    Namespace(
        "chat",
        CHAT_NAMESPACE,
        "1-on-1 chat",
        "Chat between two users of one tenant; a conversation is created by the first message "
        'between them. Connect `auth`: `{"token": "<jwt>", "last_seqs": {"77": 41}}` '
        "(`last_seqs` optional: for each of the user's conversations named, every message with "
        "a larger `seq` is sent first as `message:new`, in `seq` order, before any live one, "
        "with no gap and no duplicate; ids that are not the user's conversations are ignored; "
        "a `last_seqs` that is not an object of at most 1,000 non-negative integers refuses "
        "the connection with `bad_request`).",
        receives=(
            ClientEvent(
                "message:send",
                schemas.SendMessageIn,
                out.SendMessageAck,
                "Send a message to a user, or into a conversation",
                "Exactly one of `to_user_id` and `conversation_id`. A repeated `client_msg_id` "
                "of the sender stores and emits nothing and acks the first message. Errors: "
                "`validation_error`, `self_message`, `payload_too_large`, `not_found`, "
                "`rate_limited` (`details.retry_after` in seconds).",
            ),
            ClientEvent(
                "message:edit",
                schemas.MessageEditIn,
                out.MessageChangedAck,
                "Replace the body of one of the user's messages",
                "Sender only (`not_sender`); the body has the limits of a new one "
                "(`validation_error`, `payload_too_large`); a deleted message is `deleted`; "
                "past `NOTIFYHUB_CHAT_EDIT_WINDOW_SECONDS` after sending (when set) "
                "`edit_window_closed`; a message the user cannot see is `not_found`. Both "
                "participants then receive `message:updated`.",
            ),
            ClientEvent(
                "message:delete",
                schemas.MessageDeleteIn,
                out.MessageChangedAck,
                "Delete one of the user's messages (it becomes a tombstone)",
                "Sender only (`not_sender`); the message keeps its place and `seq` with "
                "`deleted_at` set and an empty `body`. Deleting a tombstone again acks it and "
                "emits nothing.",
            ),
            ClientEvent(
                "message:read",
                schemas.MessageReadIn,
                out.ReadReceiptResult,
                "Read receipt up to and including a message",
                "The read pointer only moves forward; an older receipt is acked but changes "
                "and emits nothing.",
            ),
            ClientEvent(
                "typing",
                schemas.TypingIn,
                out.Ack,
                "The user is typing, or stopped",
                "Relayed to the other participant at most once per throttle interval; send "
                "`typing: true` every second or two while the user types.",
            ),
            AUTH_REFRESH,
        ),
        sends=(
            ServerEvent(
                "message:new",
                out.Message,
                "A new message, in `seq` order per conversation",
                "To both participants, every connection (the sending socket included). On one "
                "connection each `seq` of a conversation arrives once, in order and without "
                "gaps (after a replay, from its `last_seqs` entry + 1).",
            ),
            ServerEvent(
                "message:updated",
                out.Message,
                "A message was edited or deleted",
                "The whole message as it is now: `edited_at` after an edit, `deleted_at` and "
                "an empty `body` after a delete. To both participants, every connection.",
            ),
            ServerEvent(
                "presence",
                out.Presence,
                "A user who shares a conversation with this one came online or went offline",
                "Sent on each change only: `online` when the user's first socket connects on "
                "any node, `offline` `NOTIFYHUB_PRESENCE_GRACE_SECONDS` after the last one "
                "closed (or its node died), so reconnects do not flap. Ask "
                "`GET /api/presence/` for the state at connect.",
            ),
            ServerEvent(
                "message:read",
                out.MessageReadReceipt,
                "A participant read the conversation",
                "To both participants, every connection.",
            ),
            ServerEvent(
                "typing",
                out.TypingIndicator,
                "The other participant is typing, or stopped",
                "To the other participant only. `typing: false` also comes when no refresh "
                "came for the expiry interval or the typer's socket disconnected.",
            ),
        ),
    ),
)


# -- building the document --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topology:
    """The part of the settings the document shows (hashable: the cache key)."""

    socketio_host: str
    kafka_bootstrap_servers: str
    events_topic: str
    dead_letter_topic: str

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        return cls(
            socketio_host=f"{settings.host}:{settings.port}",
            kafka_bootstrap_servers=settings.kafka_bootstrap_servers or "kafka:9092",
            events_topic=settings.kafka_topic,
            dead_letter_topic=settings.kafka_dlq_topic,
        )


def _camel(event: str) -> str:
    """``notification:mark_read`` -> ``notificationMarkRead`` (a component key)."""
    first, *rest = event.replace(":", "_").split("_")
    return first + "".join(word.capitalize() for word in rest)


def message_key(event: str, direction: Literal["in", "out", "ack"]) -> str:
    """The key of an event's message: ``In`` from clients, ``Out`` to them, ``Ack`` replies.
    An event name may go both ways (``typing``), with different payloads."""
    return _camel(event) + direction.capitalize()


def operation_id(namespace: Namespace, action: Literal["receive", "send"], event: str) -> str:
    return f"{namespace.key}_{action}_{event.replace(':', '_')}"


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _message(name: str, summary: str, description: str, payload: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": payload,
    }
    if description:
        message["description"] = description
    return message


def _wanted_models() -> dict[tuple[type[BaseModel], JsonSchemaMode], None]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for namespace in NAMESPACES:
        for client_event in namespace.receives:
            wanted[(client_event.payload, "validation")] = None
            wanted[(client_event.ack, "serialization")] = None
        for server_event in namespace.sends:
            wanted[(server_event.payload, "serialization")] = None
    wanted[(out.AckError, "serialization")] = None
    wanted[(EventEnvelope, "validation")] = None
    wanted[(KafkaDeadLetterHeaders, "serialization")] = None
    return wanted


def _operation(
    action: Literal["receive", "send"],
    channel: str,
    event: str,
    summary: str,
    message: str,
    *,
    replies: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An operation on ``channel`` carrying its message ``message`` (keys of the channel's
    messages, as AsyncAPI 3 requires), answered with one of ``replies`` if any."""

    def in_channel(key: str) -> dict[str, str]:
        return _ref("channels", channel, "messages", key)

    operation: dict[str, Any] = {
        "action": action,
        "channel": _ref("channels", channel),
        "title": event,
        "summary": summary,
        "messages": [in_channel(message)],
    }
    if replies:
        operation["reply"] = {
            "channel": _ref("channels", channel),
            "messages": [in_channel(key) for key in replies],
        }
    return operation


def _register(
    messages: dict[str, Any], listed: dict[str, Any], key: str, message: dict[str, Any]
) -> str:
    """Add ``message`` to the components under ``key`` and list it in a channel's messages."""
    messages[key] = message
    listed[key] = _ref("components", "messages", key)
    return key


def _register_event(
    messages: dict[str, Any],
    listed: dict[str, Any],
    event: ClientEvent | ServerEvent,
    direction: Literal["in", "out"],
    schemas_by_model: dict[type[BaseModel], dict[str, Any]],
) -> str:
    """:func:`_register` the message of an event's payload (an ack is a message of its own)."""
    message = _message(
        event.name, event.summary, event.description, schemas_by_model[event.payload]
    )
    return _register(messages, listed, message_key(event.name, direction), message)


def _socketio_parts(
    schemas_by_model: dict[type[BaseModel], dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Channels, operations and messages of the namespaces."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {
        ACK_ERROR: _message(
            "ack error",
            "A failed event's ack",
            "`error.code` is one of `validation_error`, `bad_request`, `unauthorized`, "
            "`forbidden`, `not_found`, `payload_too_large`, `self_message`, `rate_limited`, "
            "`internal_error` (see docs/protocol.md, section 4).",
            schemas_by_model[out.AckError],
        )
    }
    for namespace in NAMESPACES:
        # A message shared by both namespaces (auth:refresh, the error ack) is one
        # component, listed by each channel.
        channel_messages = {ACK_ERROR: _ref("components", "messages", ACK_ERROR)}

        for client_event in namespace.receives:
            event_key = _register_event(
                messages, channel_messages, client_event, "in", schemas_by_model
            )
            ack_key = _register(
                messages,
                channel_messages,
                message_key(client_event.name, "ack"),
                _message(
                    f"{client_event.name} ack",
                    f"The ack of a successful `{client_event.name}`",
                    "",
                    schemas_by_model[client_event.ack],
                ),
            )
            operations[operation_id(namespace, "receive", client_event.name)] = _operation(
                "receive",
                namespace.key,
                client_event.name,
                client_event.summary,
                event_key,
                replies=(ack_key, ACK_ERROR),
            )
        for server_event in namespace.sends:
            event_key = _register_event(
                messages, channel_messages, server_event, "out", schemas_by_model
            )
            operations[operation_id(namespace, "send", server_event.name)] = _operation(
                "send", namespace.key, server_event.name, server_event.summary, event_key
            )
        channels[namespace.key] = {
            "address": namespace.address,
            "title": namespace.title,
            "description": namespace.description,
            "servers": [_ref("servers", SOCKETIO_SERVER)],
            "messages": channel_messages,
        }
    return channels, operations, messages


def _kafka_key() -> dict[str, Any]:
    return {
        "kafka": {
            "key": {
                "type": "string",
                "description": "Not read by the hub; producers use `{tenant_id}:{event_id}` "
                "so every copy of one event goes to the same partition",
            },
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _kafka_parts(
    topology: Topology, schemas_by_model: dict[type[BaseModel], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Channels, operations and messages of the event topic and its dead letters."""
    event = _message(
        "crm event",
        "A business event of a CRM module",
        "The envelope as UTF-8 JSON, at most "
        f"{MAX_EVENT_BYTES:,} bytes. Headers: none required, none read. Applied once per "
        "`(tenant_id, event_id)`; unknown fields are ignored. One that cannot be decoded or "
        "validated, or that the database refuses, goes to the dead-letter topic.",
        schemas_by_model[EventEnvelope],
    )
    event["bindings"] = _kafka_key()
    dead_letter = {
        "name": "dead letter",
        "summary": "An event the hub cannot apply",
        "description": "Value and key: the original record's, unchanged (the value is often "
        "not a valid envelope); the original headers are not copied.",
        "contentType": "application/octet-stream",
        "headers": schemas_by_model[KafkaDeadLetterHeaders],
        "bindings": _kafka_key(),
    }
    servers = [_ref("servers", KAFKA_SERVER)]
    channels = {
        "crmEvents": {
            "address": topology.events_topic,
            "title": "CRM events",
            "description": "Events CRM modules publish (`NOTIFYHUB_KAFKA_TOPIC`); the hub "
            "consumes them in the consumer group `NOTIFYHUB_KAFKA_GROUP_ID`.",
            "servers": servers,
            "messages": {"crmEvent": _ref("components", "messages", "crmEvent")},
        },
        "crmEventsDeadLetters": {
            "address": topology.dead_letter_topic,
            "title": "Dead letters",
            "description": "Events that cannot be applied (`NOTIFYHUB_KAFKA_DLQ_TOPIC`), "
            "produced with `acks=all` before the offsets are committed.",
            "servers": servers,
            "messages": {"deadLetter": _ref("components", "messages", "deadLetter")},
        },
    }
    operations = {
        "kafka_receive_event": _operation(
            "receive",
            "crmEvents",
            "crm event",
            "Consume CRM events: store a notification per recipient, queue emails",
            "crmEvent",
        ),
        "kafka_send_dead_letter": _operation(
            "send",
            "crmEventsDeadLetters",
            "dead letter",
            "Dead-letter an event that cannot be applied, with the reason",
            "deadLetter",
        ),
    }
    return channels, operations, {"crmEvent": event, "deadLetter": dead_letter}


_DESCRIPTION = """\
The realtime side of NotifyHub: the Socket.IO namespaces `/notifications` and `/chat`, and \
the Kafka topics CRM modules publish events to. Operations are from the hub's point of view: \
`receive` is an event a client emits (its `reply` is the ack; request one, errors are only \
reported in acks), `send` is an event the hub emits.

Socket.IO: protocol 5 over Engine.IO 4 at the path `/socket.io/`, WebSocket or HTTP \
long-polling, JSON payloads, one payload per event. Each namespace authenticates \
separately with the connect packet's `auth` (see the channels); a refused connection gets \
`connect_error` with `message` = `data.code` (`unauthorized`, `bad_request`) and \
`data.message` saying why. The REST API is described by `/api/openapi.json`; the \
repository's `docs/protocol.md` is the full reference.
"""


def build_document(topology: Topology) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of both namespaces and the Kafka topics of ``topology``."""
    schemas_by_model, components = model_schemas(_wanted_models())
    channels, operations, messages = _socketio_parts(schemas_by_model)
    for part, new in zip(
        (channels, operations, messages), _kafka_parts(topology, schemas_by_model), strict=True
    ):
        part.update(new)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "NotifyHub realtime",
            "version": API_VERSION,
            "description": _DESCRIPTION,
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            SOCKETIO_SERVER: {
                "host": "{host}",
                "protocol": "ws",
                "pathname": SOCKETIO_PATH,
                "title": "Socket.IO",
                "description": "Socket.IO on the hub's own host and port (the same as REST)",
                "variables": {
                    "host": {
                        "default": topology.socketio_host,
                        "description": "The hub's host and port",
                    }
                },
                "security": [_ref("components", "securitySchemes", SECURITY_SCHEME)],
            },
            KAFKA_SERVER: {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "title": "Kafka",
                "description": "The brokers of `NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS`",
                "variables": {
                    "bootstrap": {
                        "default": topology.kafka_bootstrap_servers,
                        "description": "Bootstrap servers, comma-separated `host:port`",
                    }
                },
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": components,
            "messages": dict(sorted(messages.items())),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The JWT goes in the connect packet's `auth.token` (without "
                    "one, the handshake's `Authorization: Bearer` header; a `?token=` query "
                    "parameter is ignored). Claims: `sub`, `tenant_id`, `exp`; optional "
                    "`roles`, `iat`, `aud`, `iss`. Refresh it with `auth:refresh`.",
                }
            },
        },
    }


@functools.lru_cache(maxsize=8)
def _document_bytes(topology: Topology) -> bytes:
    return orjson.dumps(build_document(topology))


def document_bytes(settings: Settings) -> bytes:
    """The served document, built on first use and kept for the life of the process."""
    return _document_bytes(Topology.of(settings))


async def asyncapi_json(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(request.app[SETTINGS]), content_type="application/json")
