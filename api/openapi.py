"""``GET /api/openapi.json`` (OpenAPI 3.1) and ``GET /api/docs`` (a page that renders it).

The document is generated, never kept by hand: each route's declaration in
:mod:`api.routes` names its request body model (the one the view validates with, from
:mod:`hub.schemas` or the event envelope), its response models (the ones the view shapes its
reply with, from :mod:`hub.responses`) and the errors it can answer. Pydantic turns the
models into JSON Schema (``components.schemas``). The document is built once per process and
served as bytes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.declarations import API_ROUTES, Operation, Param, Reply, Role
from hub import responses as out

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
REF_TEMPLATE = "#/components/schemas/{model}"


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
        "(`forbidden`); a chat message of the other participant (`not_sender`) or past the "
        "edit window (`edit_window_closed`)",
        (),
    ),
    404: (
        "NotFound",
        "Not found, or not the caller's: existence is never revealed (`not_found`)",
        (),
    ),
    409: (
        "Conflict",
        "The resource's state does not allow it: a deleted message cannot be edited (`deleted`)",
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


def build_document(operations: tuple[Operation, ...]) -> dict[str, Any]:
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
        ("push", "Devices of users and pushes (Web Push, FCM, APNs) to users not connected"),
        ("webhooks", "Standard Webhooks to the tenant's systems when things happen in the hub"),
        ("data rights", "A user's data, exported or erased at the tenant's request (GDPR)"),
        ("tenants", "The tenant's own settings (retention)"),
        ("preferences", "Who wants which channel for which category; unsubscribe links"),
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


# Keyed by the tuple's id, holding the tuple itself so that the id cannot be reused.
_BUILT: dict[int, tuple[tuple[Operation, ...], bytes]] = {}


def document_bytes(operations: tuple[Operation, ...]) -> bytes:
    """The document of ``operations`` (the app's routes), built on first use and kept for
    the life of the process."""
    entry = _BUILT.get(id(operations))
    if entry is None or entry[0] is not operations:
        entry = _BUILT[id(operations)] = (operations, orjson.dumps(build_document(operations)))
    return entry[1]


def openapi_document(operations: tuple[Operation, ...]) -> dict[str, Any]:
    """A fresh copy of the document of ``operations``."""
    document: dict[str, Any] = orjson.loads(document_bytes(operations))
    return document


# -- views ------------------------------------------------------------------------------------


async def openapi_json(request: web.Request) -> web.Response:
    body = document_bytes(request.app[API_ROUTES])
    return web.Response(body=body, content_type="application/json")


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
