"""``GET /api/openapi.json`` (OpenAPI 3.1) and ``GET /api/docs`` (a page that renders it).

The document is generated, never kept by hand: :data:`OPERATIONS` names, for every route of
:mod:`api.routes`, its request body model (the one the view validates with, from
:mod:`hub.schemas` or the event envelope), its response models (the ones the view shapes its
reply with, from :mod:`hub.responses`) and the errors it can answer. Pydantic turns the
models into JSON Schema (``components.schemas``). The document is built once per process and
served as bytes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from hub import responses as out
from hub import schemas
from hub.intake.envelope import MAX_EVENT_BYTES, EventEnvelope
from hub.services.chat import ChatLimits
from hub.services.common import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
REF_TEMPLATE = "#/components/schemas/{model}"

Role = Literal["public", "user", "service"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented response of an operation."""

    description: str
    model: type[BaseModel] | None = None
    content_type: str = "application/json"
    schema: Mapping[str, Any] | None = None  # for non-model bodies (text, html)
    headers: tuple[str, ...] = ()  # names in components.headers


@dataclass(frozen=True, slots=True)
class Param:
    """A query or path parameter."""

    name: str
    location: Literal["query", "path"]
    schema: Mapping[str, Any]
    description: str
    required: bool = False
    example: Any = None


@dataclass(frozen=True, slots=True)
class Operation:
    method: Literal["GET", "POST"]
    path: str  # as documented, trailing slash included (the router accepts it without too)
    operation_id: str
    summary: str
    tag: str
    role: Role
    replies: Mapping[int, Reply]
    description: str = ""
    body: type[BaseModel] | None = None
    body_examples: Mapping[str, Any] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()  # statuses answered with the Error schema


# -- parameters -------------------------------------------------------------------------------

LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
    f"Page size, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}); values outside the range "
    "are clamped to it, a non-integer is 400",
    example=20,
)
CURSOR = Param(
    "cursor",
    "query",
    {"type": "string"},
    "Opaque cursor from a previous page's `next_cursor`; anything else is 400 (`invalid_cursor`)",
)
UNREAD = Param(
    "unread",
    "query",
    {"type": "boolean", "default": False},
    "`true` (or `1`): only unread notifications; `false` (or `0`) or absent: all",
    example=True,
)
CATEGORY = Param(
    "category", "query", {"type": "string"}, "Only notifications of this category", example="deals"
)
CONVERSATION_ID = Param(
    "conversation_id",
    "path",
    {"type": "string", "minLength": 1},
    "Conversation id; one that is not the caller's, or does not exist, is 404",
    required=True,
    example="77",
)
EMAIL_ID = Param(
    "email_id",
    "path",
    {"type": "string", "minLength": 1},
    "Email id, as returned by `POST /api/emails/send/`",
    required=True,
    example="3f2b9c0e5d7a4e8f9a1b2c3d4e5f6a7b",
)
LEGACY_PARAMS = (
    Param(
        "tenant_id",
        "path",
        {"type": "string"},
        "Must be the token's `tenant_id`",
        required=True,
        example="acme",
    ),
    Param("user_id", "path", {"type": "string"}, "Must be the token's `sub`", True, example="u-42"),
    Param("token", "query", {"type": "string"}, "The JWT (this old protocol has no header)", True),
    Param(
        "last_seq",
        "query",
        {"type": "integer", "minimum": 0},
        "Replay every stored notification with a larger `seq` first",
    ),
)

# -- the operations ---------------------------------------------------------------------------

SERVICE_NOTE = "Requires a token with the `service` role."
CHAT_BODY_MAX = ChatLimits().body_max_chars

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/notifications/",
        "listNotifications",
        "List the caller's notifications",
        "notifications",
        "user",
        {200: Reply("A page of notifications, newest first", out.NotificationPage)},
        description="Keyset-paginated, newest first; follow `next_cursor` for older pages.",
        params=(LIMIT, CURSOR, UNREAD, CATEGORY),
        errors=(400, 401, 503),
    ),
    Operation(
        "POST",
        "/api/notifications/",
        "createNotifications",
        "Create a notification for each recipient",
        "notifications",
        "service",
        {
            201: Reply(
                "Created (or, for a repeated idempotency key, the first request's ids; "
                "then `Idempotent-Replayed: true` is set)",
                out.CreatedNotifications,
                headers=("Idempotent-Replayed",),
            )
        },
        description="Stores one notification per distinct recipient of the caller's tenant "
        "and emits `notification:new` to each recipient's sockets. " + SERVICE_NOTE,
        body=schemas.CreateNotificationsIn,
        errors=(400, 401, 403, 413, 503),
    ),
    Operation(
        "GET",
        "/api/notifications/unread-count/",
        "getUnreadCount",
        "Count the caller's unread notifications",
        "notifications",
        "user",
        {200: Reply("The unread count", out.UnreadCount)},
        errors=(401, 503),
    ),
    Operation(
        "POST",
        "/api/notifications/mark-as-read/",
        "markNotificationsRead",
        "Mark notifications as read",
        "notifications",
        "user",
        {200: Reply("How many changed, and the new unread count", out.MarkReadResult)},
        description="Ids that are not the caller's are ignored, never revealed. Every "
        "connection of the caller receives `notification:read`.",
        body=schemas.MarkReadIn,
        body_examples={
            "some": {"summary": "Some notifications", "value": {"ids": ["1042", "1043"]}},
            "all": {"summary": "Every unread notification", "value": {"all": True}},
        },
        errors=(400, 401, 413, 503),
    ),
    Operation(
        "POST",
        "/api/broadcasts/",
        "createBroadcast",
        "Announce to every connected socket of the tenant",
        "notifications",
        "service",
        {202: Reply("Emitted as `broadcast` on every node; not stored", out.BroadcastAccepted)},
        description="Emitted at once to every connected `/notifications` socket of the "
        "caller's tenant. " + SERVICE_NOTE,
        body=schemas.BroadcastIn,
        errors=(400, 401, 403, 413, 503),
    ),
    Operation(
        "POST",
        "/api/messages/send/",
        "sendMessage",
        "Send a chat message to a user of the tenant",
        "chat",
        "user",
        {
            201: Reply("Stored and emitted as `message:new` to both participants", out.SentMessage),
            200: Reply(
                "A repeated `client_msg_id` of the caller: the first message; nothing is "
                "stored or emitted",
                out.SentMessage,
            ),
        },
        description=f"`body` is 1 to {CHAT_BODY_MAX:,} characters by default (configurable); "
        "longer is 413. Sending to yourself is 400. A per-user rate limit answers 429 with "
        "`Retry-After`.",
        body=schemas.RestSendMessageIn,
        errors=(400, 401, 413, 429, 503),
    ),
    Operation(
        "GET",
        "/api/conversations/",
        "listConversations",
        "List the caller's conversations",
        "chat",
        "user",
        {200: Reply("Most recently active first", out.ConversationPage)},
        params=(LIMIT, CURSOR),
        errors=(400, 401, 503),
    ),
    Operation(
        "GET",
        "/api/conversations/{conversation_id}/messages/",
        "listMessages",
        "List a conversation's messages",
        "chat",
        "user",
        {200: Reply("Newest first", out.MessagePage)},
        params=(CONVERSATION_ID, LIMIT, CURSOR),
        errors=(400, 401, 404, 503),
    ),
    Operation(
        "POST",
        "/api/conversations/{conversation_id}/read/",
        "markConversationRead",
        "Send a read receipt",
        "chat",
        "user",
        {200: Reply("The caller's unread count in the conversation", out.ReadReceiptResult)},
        description="Read up to and including `message_id`; the read pointer only moves "
        "forward. Both participants receive `message:read` when it moves.",
        params=(CONVERSATION_ID,),
        body=schemas.RestReadIn,
        errors=(400, 401, 404, 413, 503),
    ),
    Operation(
        "POST",
        "/api/events/",
        "publishEvent",
        "Publish a CRM event (the Kafka envelope over HTTP)",
        "events",
        "service",
        {202: Reply("Applied (or, for a known event id, recognised)", out.EventAccepted)},
        description="Applied once per `(tenant_id, event_id)`. `tenant_id` must be the "
        f"token's tenant (else 403). At most {MAX_EVENT_BYTES // 1024} KiB (413). Unknown "
        "fields are ignored. " + SERVICE_NOTE,
        body=EventEnvelope,
        body_examples={
            "deal_won": {
                "summary": "A notification and an email for one recipient",
                "value": {
                    "event_id": "deal-981-won",
                    "tenant_id": "acme",
                    "type": "deal.won",
                    "occurred_at": "2025-03-01T09:30:00Z",
                    "recipients": [{"user_id": "u-42", "email": "ann@example.com"}],
                    "notification": {
                        "title": "Deal won",
                        "body": "ACME Corp signed the contract.",
                        "category": "deals",
                        "data": {"deal_id": 981},
                        "link": "/deals/981",
                    },
                    "email": {"template_key": "deal_won", "context": {"Deal": "ACME Corp"}},
                },
            }
        },
        errors=(400, 401, 403, 413, 503),
    ),
    Operation(
        "POST",
        "/api/emails/send/",
        "sendEmail",
        "Queue a templated email",
        "emails",
        "service",
        {202: Reply("Queued; poll `GET /api/emails/{email_id}/` for its status", out.EmailQueued)},
        description="The arguments of the `send_notification_email` task. " + SERVICE_NOTE,
        body=schemas.SendEmailIn,
        errors=(400, 401, 403, 413, 503),
    ),
    Operation(
        "GET",
        "/api/emails/{email_id}/",
        "getEmail",
        "Read an email's delivery status",
        "emails",
        "service",
        {200: Reply("Status and history", out.EmailStatus)},
        description="404 for an email of any other tenant. " + SERVICE_NOTE,
        params=(EMAIL_ID,),
        errors=(401, 403, 404, 503),
    ),
    Operation(
        "GET",
        "/healthz",
        "healthz",
        "Liveness: the process answers",
        "operations",
        "public",
        {200: Reply("Alive", out.Health)},
    ),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: database (migrated to this code's schema), Redis and the Kafka consumer, "
        "as configured",
        "operations",
        "public",
        {
            200: Reply("Every configured dependency answers", out.Ready),
            503: Reply("Some dependency does not answer", out.NotReady),
        },
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics of this process",
        "operations",
        "public",
        {200: Reply("Prometheus text exposition", content_type="text/plain", schema={})},
    ),
    Operation(
        "GET",
        "/api/openapi.json",
        "getOpenApi",
        "This OpenAPI 3.1 document",
        "operations",
        "public",
        {200: Reply("The document", schema={"type": "object"})},
    ),
    Operation(
        "GET",
        "/api/asyncapi.json",
        "getAsyncApi",
        "The AsyncAPI 3.0 document of the Socket.IO namespaces and the Kafka topics",
        "operations",
        "public",
        {200: Reply("The document", schema={"type": "object"})},
    ),
    Operation(
        "GET",
        "/api/docs",
        "getDocs",
        "A page that renders this document",
        "operations",
        "public",
        {200: Reply("HTML", content_type="text/html", schema={"type": "string"})},
    ),
    Operation(
        "GET",
        "/ws/notifications/{tenant_id}/{user_id}/",
        "legacyNotificationsWebSocket",
        "Legacy plain WebSocket (WebSocket upgrade, not a REST call)",
        "realtime",
        "public",
        {101: Reply("Switching to the WebSocket protocol", content_type="", schema=None)},
        description="For clients of the Django Channels service this hub replaces. Receives "
        'the `/notifications` events as JSON text frames `{"type": "notification:new" | '
        '"notification:read", "data": {...}}`. The token goes in the query string; a path '
        "that does not match its claims is closed with 4403, a bad or expired token with "
        "4401. New clients use Socket.IO (`/socket.io/`, namespaces `/notifications` and "
        "`/chat`).",
        params=LEGACY_PARAMS,
    ),
)

# -- shared components ------------------------------------------------------------------------

_ERRORS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    # status: (component name, description, headers)
    400: (
        "BadRequest",
        "Invalid request: malformed JSON (`invalid_json`), a field that fails validation "
        "(`validation_error`, details list each problem), a bad cursor (`invalid_cursor`) "
        "or a body that does not decode as its `Content-Encoding` says "
        "(`invalid_content_encoding`)",
        (),
    ),
    401: (
        "Unauthorized",
        "Missing, invalid or expired bearer token (`unauthorized`)",
        ("WWW-Authenticate",),
    ),
    403: (
        "Forbidden",
        "Valid token, not allowed: the `service` role is missing, or another tenant is named "
        "(`forbidden`)",
        (),
    ),
    404: (
        "NotFound",
        "Not found, or not the caller's: existence is never revealed (`not_found`)",
        (),
    ),
    413: (
        "PayloadTooLarge",
        "The body, or one of its fields, is larger than allowed (`payload_too_large`)",
        (),
    ),
    429: (
        "RateLimited",
        "Too many requests (`rate_limited`); retry after `Retry-After` seconds",
        ("Retry-After",),
    ),
    503: (
        "Unavailable",
        "A dependency (Redis, the database) does not answer (`unavailable`); retry after "
        "`Retry-After` seconds when given",
        ("Retry-After",),
    ),
}

_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "The request's id (the caller's own `X-Request-ID` if it is 1-64 of "
        "`A-Za-z0-9._:-`); it is in every log line of the request",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when the idempotency key had been seen: nothing was created",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "WWW-Authenticate": {
        "description": 'Always `Bearer realm="notifyhub"`',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    },
}

_DESCRIPTION = """\
Realtime notifications and 1-on-1 chat for multi-tenant CRMs.

**Authentication.** Every `/api/` route except this document, `/api/docs` and
`/api/asyncapi.json` takes a JWT: `Authorization: Bearer <token>`, with claims `sub` (user
id), `tenant_id` and `exp` (optionally `roles`, `iat`, `aud`, `iss`). A missing, invalid or
expired token is 401; a valid token that is not allowed is 403. Routes marked *service*
need the `service` role: a trusted CRM module, acting for any user of its own tenant and
never of another.

**Errors.** Every error is `{"error": {"code", "message", "details"}}` (schema `Error`).

**Trailing slashes** are optional on every route.

**Realtime.** Socket.IO at `/socket.io/` (namespaces `/notifications` and `/chat`, token in
the connect packet's `auth`) is described in the repository's `docs/protocol.md` and by the
AsyncAPI 3.0 document at `/api/asyncapi.json`, not here; the legacy plain WebSocket is
listed for completeness. Every response carries `X-Request-ID`.
"""


def _security(role: Role) -> list[dict[str, list[str]]]:
    return [] if role == "public" else [{"bearerAuth": []}]


def _content(reply: Reply, schemas_by_model: Mapping[type[BaseModel], Any]) -> dict[str, Any]:
    if reply.model is not None:
        return {reply.content_type: {"schema": schemas_by_model[reply.model]}}
    if reply.schema is None:
        return {}
    return {reply.content_type: {"schema": dict(reply.schema)}}


def _header_refs(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-ID", *names)}


def _parameter(param: Param) -> dict[str, Any]:
    parameter: dict[str, Any] = {
        "name": param.name,
        "in": param.location,
        "required": param.required or param.location == "path",
        "description": param.description,
        "schema": dict(param.schema),
    }
    if param.example is not None:
        parameter["example"] = param.example
    return parameter


def _operation(op: Operation, schemas_by_model: Mapping[type[BaseModel], Any]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _security(op.role),
        "x-role": op.role,
    }
    if op.description:
        document["description"] = op.description
    if op.params:
        document["parameters"] = [_parameter(param) for param in op.params]
    if op.body is not None:
        media: dict[str, Any] = {"schema": schemas_by_model[op.body]}
        if op.body_examples:
            media["examples"] = dict(op.body_examples)
        document["requestBody"] = {"required": True, "content": {"application/json": media}}
    replies: dict[str, Any] = {}
    for status, reply in sorted(op.replies.items()):
        response: dict[str, Any] = {"description": reply.description}
        if status != 101:
            response["headers"] = _header_refs(reply.headers)
        content = _content(reply, schemas_by_model)
        if content:
            response["content"] = content
        replies[str(status)] = response
    for status in op.errors:
        replies[str(status)] = {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
    document["responses"] = dict(sorted(replies.items()))
    return document


def model_schemas(
    wanted: Iterable[tuple[type[BaseModel], JsonSchemaMode]],
) -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """Each model's JSON Schema, a ``$ref`` into ``components.schemas``, and those components.

    One pydantic pass over all the models, so a model nested in several of them is one
    component, named once. Also used by :mod:`api.asyncapi`.
    """
    pairs = list(dict.fromkeys(wanted))
    refs, definitions = models_json_schema(pairs, ref_template=REF_TEMPLATE)
    by_model = {model: dict(refs[(model, mode)]) for model, mode in pairs}
    return by_model, dict(sorted(definitions.get("$defs", {}).items()))


def build_document(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations`` (every REST route by default)."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in operations:
        if op.body is not None:
            wanted[(op.body, "validation")] = None
        for reply in op.replies.values():
            if reply.model is not None:
                wanted[(reply.model, "serialization")] = None
    wanted[(out.Error, "serialization")] = None
    schemas_by_model, components = model_schemas(wanted)

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas_by_model)

    error_ref = schemas_by_model[out.Error]
    error_responses = {
        name: {
            "description": description,
            "headers": _header_refs(headers),
            "content": {"application/json": {"schema": error_ref}},
        }
        for name, description, headers in _ERRORS.values()
    }
    tags = [
        ("notifications", "Notification center and tenant-wide broadcasts"),
        ("chat", "1-on-1 chat within a tenant"),
        ("events", "Event intake from CRM modules"),
        ("emails", "Templated email through the tenant's SMTP server"),
        ("operations", "Probes, metrics and this documentation"),
        ("realtime", "Realtime endpoints outside REST"),
    ]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "NotifyHub",
            "version": API_VERSION,
            "description": _DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [{"name": name, "description": text} for name, text in tags],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Claims: `sub`, `tenant_id`, `exp`; optional `roles` "
                    "(`service` for CRM modules), `iat`, `aud`, `iss`",
                }
            },
            "schemas": components,
            "responses": error_responses,
            "headers": _HEADERS,
        },
    }


@functools.cache
def document_bytes() -> bytes:
    """The served document, built on first use and kept for the life of the process."""
    return orjson.dumps(build_document())


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the served document."""
    document: dict[str, Any] = orjson.loads(document_bytes())
    return document


# -- views ------------------------------------------------------------------------------------


async def openapi_json(_request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json")


# The page is three files of hub/ (a template, a script, a style sheet), inlined into one
# self-contained response so that its Content-Security-Policy can pin them by hash.
_ASSETS = Path(__file__).resolve().parent.parent / "hub"
_DOCS_SCRIPT = (_ASSETS / "static" / "api-docs.js").read_text()
_DOCS_STYLE = (_ASSETS / "static" / "api-docs.css").read_text()


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


DOCS_HTML = (
    (_ASSETS / "templates" / "api-docs.html")
    .read_text()
    .format(style=_DOCS_STYLE, script=_DOCS_SCRIPT)
    .encode()
)

# Self-contained: no CDN, nothing but the document itself is fetched.
DOCS_CSP = (
    "default-src 'none'; connect-src 'self'; "
    f"script-src {_csp_hash(_DOCS_SCRIPT)}; style-src {_csp_hash(_DOCS_STYLE)}; "
    "base-uri 'none'; frame-ancestors 'none'"
)


async def docs_page(_request: web.Request) -> web.Response:
    # The page fetches "openapi.json" relative to itself, i.e. /api/openapi.json.
    return web.Response(
        body=DOCS_HTML,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": DOCS_CSP},
    )
