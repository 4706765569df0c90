"""The OpenAPI document: valid 3.1, covers every public route and every registered route,
served with its docs page, and the live hub honours it under schemathesis."""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import hashlib
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
import redis.asyncio as aioredis
import schemathesis
from aiohttp import web
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import build_document, document_bytes, openapi_document
from api.routes import ROUTES as OPERATIONS
from api.routes import setup_routes
from hub.settings import Settings
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory
from tests.harness.tokens import hs256_token

# Every public REST route clients are written against, with its trailing slash.
PUBLIC_ROUTES = {
    ("GET", "/api/notifications/"),
    ("GET", "/api/notifications/unread-count/"),
    ("POST", "/api/notifications/mark-as-read/"),
    ("POST", "/api/notifications/mark-as-seen/"),
    ("POST", "/api/notifications/mark-as-unread/"),
    ("POST", "/api/notifications/archive/"),
    ("POST", "/api/notifications/unarchive/"),
    ("DELETE", "/api/notifications/{notification_id}/"),
    ("GET", "/api/tenant/settings/"),
    ("PUT", "/api/tenant/settings/"),
    ("POST", "/api/notifications/"),
    ("POST", "/api/broadcasts/"),
    ("POST", "/api/messages/send/"),
    ("GET", "/api/conversations/"),
    ("GET", "/api/conversations/{conversation_id}/messages/"),
    ("POST", "/api/conversations/{conversation_id}/read/"),
    ("POST", "/api/events/"),
    ("POST", "/api/events/{event_id}/cancel/"),
    ("POST", "/api/emails/send/"),
    ("GET", "/api/emails/{email_id}/"),
    ("GET", "/api/preferences/"),
    ("PATCH", "/api/preferences/"),
    ("GET", "/api/tenant/preferences/"),
    ("PUT", "/api/tenant/preferences/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/docs"),
}
SERVICE_ROUTES = {
    ("GET", "/api/tenant/settings/"),
    ("PUT", "/api/tenant/settings/"),
    ("GET", "/api/tenant/preferences/"),
    ("PUT", "/api/tenant/preferences/"),
    ("POST", "/api/notifications/"),
    ("POST", "/api/broadcasts/"),
    ("POST", "/api/events/"),
    ("POST", "/api/events/{event_id}/cancel/"),
    ("POST", "/api/emails/send/"),
    ("GET", "/api/emails/{email_id}/"),
    ("POST", "/api/webhooks/"),
    ("GET", "/api/webhooks/"),
    ("DELETE", "/api/webhooks/{webhook_id}/"),
    ("GET", "/api/webhooks/{webhook_id}/deliveries/"),
    ("GET", "/api/users/{user_id}/export/"),
    ("DELETE", "/api/users/{user_id}/"),
}
PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/docs"),
    ("GET", "/api/asyncapi.json"),
    ("GET", "/ws/notifications/{tenant_id}/{user_id}/"),
    ("GET", "/api/unsubscribe/"),
    ("POST", "/api/unsubscribe/"),
}

# Each run of the fuzzer: its budget per operation and a fixed seed, so CI is repeatable. To
# explore further: FUZZ_SEED=<n> FUZZ_MAX_EXAMPLES=<n> pytest tests/test_openapi.py -k schemathesis
# (a failure prints the seed and a curl command that reproduces it).
FUZZ_MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "20250301"))
FUZZ_CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "response_schema_conformance",
        "content_type_conformance",
    ]
)


# Loaded by the schemathesis CLI (SCHEMATHESIS_HOOKS): an event envelope must name the token's
# tenant, which random data never does; half of the generated envelopes that carry a string
# tenant get the caller's, so the fuzzer reaches the 202 path as well as the 403 one.
FUZZ_HOOKS = """
import os
import zlib

import schemathesis


@schemathesis.hook
def map_case(context, case):
    body = case.body
    if (
        case.operation.path == "/api/events/"
        and isinstance(body, dict)
        and isinstance(body.get("tenant_id"), str)
        and zlib.crc32(repr(sorted(body)).encode() + body["tenant_id"].encode()) % 2 == 0
    ):
        case.body = {**body, "tenant_id": os.environ["FUZZ_TENANT"]}
    return case
"""


def operations_of(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi_document(OPERATIONS)
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()  # the OAS 3.1 meta-schema
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name  # each a valid JSON Schema 2020-12
    # The validation is real: a broken document is refused.
    broken = copy.deepcopy(document)
    broken["paths"]["/healthz"]["get"]["responses"] = ["not", "an", "object"]
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()
    # Every $ref resolves.
    text = document_bytes(OPERATIONS).decode()
    for ref in set(re.findall(r'"\$ref":"#/([^"]+)"', text)):
        node: Any = document
        for part in ref.split("/"):
            node = node[part]


def test_document_covers_every_contract_route() -> None:
    operations = operations_of(openapi_document(OPERATIONS))
    assert PUBLIC_ROUTES - set(operations) == set()
    for key, operation in operations.items():
        assert operation["operationId"] and operation["summary"] and operation["tags"], key
        if key in PUBLIC_ROUTES:
            assert operation["security"] == [], key
            assert operation["x-role"] == "public"
            continue
        assert operation["security"] == [{"bearerAuth": []}], key
        assert operation["x-role"] == ("service" if key in SERVICE_ROUTES else "user"), key
        responses = operation["responses"]
        assert responses["401"] == {"$ref": "#/components/responses/Unauthorized"}, key
        if key in SERVICE_ROUTES:
            assert responses["403"] == {"$ref": "#/components/responses/Forbidden"}, key
        if "requestBody" in operation:
            assert responses["400"] == {"$ref": "#/components/responses/BadRequest"}, key
            assert "413" in responses, key
        for parameter in operation.get("parameters", []):
            assert parameter["description"], (key, parameter["name"])
    # Path parameters are declared.
    for (_, path), operation in operations.items():
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), path


def test_document_shape_auth_errors_and_examples() -> None:
    document = openapi_document(OPERATIONS)
    components = document["components"]
    assert components["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": components["securitySchemes"]["bearerAuth"]["description"],
    }
    assert document["security"] == [{"bearerAuth": []}]
    error = components["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail = components["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == {"code", "message", "details"}
    for status in ("BadRequest", "Unauthorized", "Forbidden", "NotFound", "RateLimited"):
        media = components["responses"][status]["content"]["application/json"]
        assert media["schema"] == {"$ref": "#/components/schemas/Error"}
    list_params = {
        p["name"]: p for p in document["paths"]["/api/notifications/"]["get"]["parameters"]
    }
    assert list_params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert set(list_params) == {"limit", "cursor", "unread", "seen", "archived", "category"}
    assert list_params["unread"]["schema"]["type"] == "boolean"
    # Every request body and every 2xx model has an example.
    schemas = components["schemas"]
    for key, operation in operations_of(document).items():
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            name = body["schema"]["$ref"].rsplit("/", 1)[1]
            assert body.get("examples") or schemas[name].get("examples"), key
    for name in (
        "Notification",
        "Message",
        "EmailStatus",
        "Error",
        "CreatedNotifications",
        "Preferences",
        "TenantPreferences",
    ):
        assert schemas[name]["examples"], name


def test_every_registered_route_is_documented() -> None:
    """The registry and the router agree: nothing served is undocumented, and back."""
    app = web.Application()
    setup_routes(app)
    registered: set[tuple[str, str]] = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD":
            continue
        registered.add((route.method, path))
    # The router accepts every trailing-slash route without it too; the document lists one.
    canonical = {
        (method, path)
        for method, path in registered
        if path.endswith("/") or (method, path + "/") not in registered
    }
    assert canonical == {(op.method, op.path) for op in OPERATIONS}


def test_request_examples_validate_against_their_models() -> None:
    """Examples shown in the document are accepted by the models that validate requests."""
    for op in OPERATIONS:
        if op.body is None:
            continue
        extra = op.body.model_config.get("json_schema_extra")
        examples = list(extra.get("examples", [])) if isinstance(extra, dict) else []
        examples += [example["value"] for example in op.body_examples.values()]
        assert examples, op.operation_id
        for example in examples:
            op.body.model_validate(example)


def test_document_is_built_once() -> None:
    assert document_bytes(OPERATIONS) is document_bytes(OPERATIONS)
    assert build_document(OPERATIONS) == openapi_document(OPERATIONS)


async def test_served_document_and_docs_page(hub: RunningHub) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{hub.url}/api/openapi.json") as response:  # no token: public
            assert response.status == 200
            assert response.content_type == "application/json"
            assert await response.json() == openapi_document(OPERATIONS)
        async with http.get(f"{hub.url}/api/docs") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
            csp = response.headers["Content-Security-Policy"]
    assert 'fetch("openapi.json")' in page
    # Self-contained: no CDN, no external script, style or font.
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # The CSP lets exactly the page's own script and style run.
    for tag in ("script", "style"):
        inline = re.search(rf"<{tag}>(.*)</{tag}>", page, re.DOTALL)
        assert inline is not None, tag
        digest = base64.b64encode(hashlib.sha256(inline.group(1).encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp, tag


async def _fuzz(
    url: str, role: str, token: str | None, tenant: str, workdir: Path
) -> tuple[str, int, str, float]:
    args = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/api/openapi.json",
        "--include-by",
        f"/x-role == {role}",
        "--exclude-path-regex",
        "^/ws/",  # a WebSocket upgrade, not a request/response operation
        "--checks",
        FUZZ_CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(FUZZ_MAX_EXAMPLES),
        "--seed",
        str(FUZZ_SEED),
        # One worker: hypothesis's lambda descriptions call ast.parse, which is not thread-safe
        # on CPython 3.11 ("AST constructor recursion depth mismatch"); the roles run in parallel.
        "--workers",
        "1",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "10",
        "--no-color",
    ]
    if token is not None:
        args += ["--header", f"Authorization: Bearer {token}"]
    (workdir / "fuzz_hooks.py").write_text(FUZZ_HOOKS)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
        "PYTHONPATH": os.pathsep.join([str(workdir), os.environ.get("PYTHONPATH", "")]),
        "FUZZ_TENANT": tenant,
    }
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return role, process.returncode, output.decode(errors="replace"), time.monotonic() - started


@pytest.mark.timeout(120)
async def test_schemathesis_finds_no_failure_on_the_live_hub(
    hub_factory: Callable[[Settings], Awaitable[RunningHub]],
    hub_settings: SettingsFactory,
    redis_url: str,
    tenant: str,
    tmp_path: Path,
) -> None:
    """Generated requests (valid and invalid) with valid tokens of one tenant: no 5xx, and
    every status, content type and body matches the document."""
    channel = f"fuzz-{uuid.uuid4().hex[:12]}"  # its email tasks stay out of other tests' way
    running = await hub_factory(hub_settings(socketio_channel=channel))
    user = hs256_token(tenant=tenant, user="fuzz-user")
    service = hs256_token(tenant=tenant, user="crm-module", roles=["service"])
    try:
        runs = await asyncio.gather(
            _fuzz(running.url, "user", user, tenant, tmp_path),
            _fuzz(running.url, "service", service, tenant, tmp_path),
            _fuzz(running.url, "public", None, tenant, tmp_path),
        )
    finally:
        client = aioredis.Redis.from_url(redis_url)
        await client.delete(f"{channel}:tasks")
        await client.aclose()
    for role, returncode, output, seconds in runs:
        print(f"schemathesis ({role} operations): exit {returncode} in {seconds:.1f} s")
        assert returncode == 0, f"schemathesis found failures ({role} operations):\n{output}"
        assert "No issues found" in output or "passed" in output, output


# Response checks that send no further requests.
RESPONSE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@functools.cache
def _loaded_schema() -> Any:
    return schemathesis.openapi.from_dict(openapi_document(OPERATIONS))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _call_and_validate(
    hub: RunningHub,
    token: str,
    method: str,
    path: str,
    *,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
) -> int:
    """One request built by schemathesis from the document; its response must be no 5xx and
    conform to the document (status, content type, schema)."""
    operation = _loaded_schema()[path][method]
    parts: dict[str, Any] = {"path_parameters": path_parameters, "query": query}
    if body is not None:
        parts["body"] = body
    case = operation.Case(**parts)

    def call_and_validate() -> int:
        # In a thread: the hub answers on this test's event loop.
        response = case.call(base_url=hub.url, headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=RESPONSE_CHECKS)
        return int(response.status_code)

    return await asyncio.to_thread(call_and_validate)


async def test_success_responses_of_existing_resources_match(hub: RunningHub, tenant: str) -> None:
    """The fuzzer mostly meets unknown ids; check the 200s of real conversations and emails
    against the document with schemathesis's own response checks."""
    service = ApiClient.for_service(hub.url, tenant)
    alice = ApiClient.for_user(hub.url, tenant, "alice")
    await service.notify(["alice"], title="Hello", data={"k": [1, "x", None]}, link="/x")
    status, sent = await alice.post("/api/messages/send/", {"to_user_id": "bob", "body": "hi"})
    assert status == 201
    message = sent["message"]
    await alice.post(f"/api/conversations/{message['conversation_id']}/read/", {"message_id": 1})
    status, queued = await service.post(
        "/api/emails/send/", {"to_email": "ann@example.com", "template_key": "welcome"}
    )
    assert status == 202
    calls: list[tuple[str, str, dict[str, str], ApiClient]] = [
        ("GET", "/api/notifications/", {}, alice),
        ("GET", "/api/conversations/", {}, alice),
        (
            "GET",
            "/api/conversations/{conversation_id}/messages/",
            {"conversation_id": message["conversation_id"]},
            alice,
        ),
        ("GET", "/api/emails/{email_id}/", {"email_id": queued["id"]}, service),
    ]
    for method, path, path_parameters, client in calls:
        status = await _call_and_validate(
            hub, client.token, method, path, path_parameters=path_parameters
        )
        assert status == 200, path
    page = (await alice.get(f"/api/conversations/{message['conversation_id']}/messages/"))[1]
    assert page["items"][0] == message


async def test_inputs_postgresql_cannot_store_are_client_errors(
    hub: RunningHub, tenant: str
) -> None:
    """NUL characters and out-of-range numbers: 4xx (or harmless 200), never a 500."""
    user = hs256_token(tenant=tenant, user="alice")
    service = hs256_token(tenant=tenant, user="crm-module", roles=["service"])
    notify = {"user_ids": ["alice"], "title": "t", "body": "b"}
    email = {"to_email": "ann@example.com", "template_key": "welcome"}
    cases: list[tuple[str, str, str, dict[str, Any], int]] = [
        (user, "GET", "/api/notifications/", {"query": {"category": "a\x00b"}}, 400),
        (user, "GET", "/api/notifications/", {"query": {"cursor": "\x00"}}, 400),
        (user, "GET", "/api/notifications/", {"query": {"limit": "9" * 30}}, 200),
        (user, "GET", "/api/notifications/", {"query": {"limit": "-5"}}, 200),
        (user, "POST", "/api/notifications/mark-as-read/", {"body": {"ids": ["\x00"]}}, 200),
        (user, "POST", "/api/notifications/mark-as-read/", {"body": {"ids": ["9" * 30]}}, 200),
        (
            user,
            "GET",
            "/api/conversations/{conversation_id}/messages/",
            {"path_parameters": {"conversation_id": "\x00"}},
            404,
        ),
        (
            user,
            "GET",
            "/api/conversations/{conversation_id}/messages/",
            {"path_parameters": {"conversation_id": "1"}, "query": {"cursor": _b64(b"9" * 30)}},
            400,
        ),
        (
            user,
            "POST",
            "/api/conversations/{conversation_id}/read/",
            {"path_parameters": {"conversation_id": "1"}, "body": {"message_id": "9" * 30}},
            404,
        ),
        (service, "GET", "/api/emails/{email_id}/", {"path_parameters": {"email_id": "\x00"}}, 404),
        (
            service,
            "POST",
            "/api/notifications/",
            {"body": {**notify, "idempotency_key": "k\x00"}},
            400,
        ),
        (service, "POST", "/api/notifications/", {"body": {**notify, "category": "\x00"}}, 400),
        (service, "POST", "/api/notifications/", {"body": {**notify, "data": {"\x00": 1}}}, 400),
        (service, "POST", "/api/emails/send/", {"body": {**email, "subject": "\x00"}}, 400),
        (service, "POST", "/api/emails/send/", {"body": {**email, "to_email": "a\x00@b"}}, 400),
        (
            service,
            "POST",
            "/api/emails/send/",
            {"body": {**email, "context": {"k": [{"v": "\x00"}]}}},
            400,
        ),
    ]
    for token, method, path, parts, expected in cases:
        status = await _call_and_validate(hub, token, method, path, **parts)
        assert status == expected, (method, path, parts, status)


# Found while fuzzing (they were 500s): forged cursors beyond what PostgreSQL stores.
FORGED_CURSORS = [
    pytest.param(
        "/api/notifications/",
        _b64(b"n1:" + b"9" * 20),
        id="notification-cursor-seq-beyond-bigint",
    ),
    pytest.param(
        "/api/conversations/",
        _b64(b"2025-01-01T00:00:00+00:00|" + b"9" * 20),
        id="conversation-cursor-id-beyond-bigint",
    ),
    pytest.param(
        "/api/conversations/",
        _b64(b"9999-12-31T23:59:59-23:59|5"),
        id="conversation-cursor-time-beyond-year-9999",
    ),
]


@pytest.mark.parametrize(("path", "cursor"), FORGED_CURSORS)
async def test_forged_cursors_are_client_errors(
    hub: RunningHub, tenant: str, path: str, cursor: str
) -> None:
    user = hs256_token(tenant=tenant, user="alice")
    status = await _call_and_validate(hub, user, "GET", path, query={"cursor": cursor})
    assert status == 400
