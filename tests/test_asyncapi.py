"""The AsyncAPI document: served in public, valid for the official ``@asyncapi/parser``, covers
every event the namespaces handle and emit, is generated from the models that validate the
payloads, and describes what a live hub really sends."""

from __future__ import annotations

import copy
import functools
import inspect
import json
import operator
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from api.asyncapi import NAMESPACES, Topology, build_document, document_bytes, message_key
from api.openapi import REF_TEMPLATE
from hub.delivery.chat import NEW_MESSAGE_EVENT
from hub.delivery.notifications import (
    BROADCAST_EVENT,
    NEW_EVENT,
    PREFERENCES_EVENT,
    READ_EVENT,
    UPDATED_EVENT,
)
from hub.intake.envelope import EventEnvelope
from hub.keys import SETTINGS
from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from hub.services.presence import PRESENCE_EVENT
from hub.settings import Settings
from hub.sockets.auth import LIFECYCLE_EVENTS
from hub.sockets.namespaces import NAMESPACE_CLASSES
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SettingsFactory, SioConnect
from tests.harness.tokens import hs256_token

JS_DIR = Path(__file__).parent / "js"
VALIDATOR = JS_DIR / "validate_asyncapi.mjs"
NPM_CI = "npm ci --prefix tests/js"
HUB = Path(__file__).parent.parent / "hub"


def default_document() -> dict[str, Any]:
    """The document served by a hub with the default settings."""
    document: dict[str, Any] = json.loads(document_bytes(Settings(_env_file=None)))  # type: ignore[call-arg]
    return document


def parser_diagnostics(document: Mapping[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    """What ``@asyncapi/parser`` says about ``document`` (run by Node; never skipped)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"Node.js is not on PATH; install Node 18+ and run `{NPM_CI}`.", pytrace=False)
    if not (JS_DIR / "node_modules" / "@asyncapi" / "parser" / "package.json").is_file():
        pytest.fail(
            f"{JS_DIR / 'node_modules'} is missing @asyncapi/parser: run `{NPM_CI}` "
            "(from the repository root) before the tests.",
            pytrace=False,
        )
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document))
    done = subprocess.run(
        [node, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    diagnostics: list[dict[str, Any]] = json.loads(done.stdout)
    return diagnostics


def errors_of(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in diagnostics if d["severity"] == "error"]


def inline(schema: Any, definitions: Mapping[str, Any]) -> Any:
    """``schema`` with every ``#/components/schemas/...`` (or ``$defs``) reference replaced by
    its target, so schemas that name their parts differently compare by content."""
    if isinstance(schema, list):
        return [inline(item, definitions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target = inline(definitions[schema["$ref"].rsplit("/", 1)[1]], definitions)
        siblings = {k: inline(v, definitions) for k, v in schema.items() if k != "$ref"}
        return {**target, **siblings}
    return {key: inline(value, definitions) for key, value in schema.items() if key != "$defs"}


def model_schema(model: type[BaseModel], mode: JsonSchemaMode) -> Any:
    """The model's own JSON Schema, references inlined."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
    return inline(schema, schema.get("$defs", {}))


def message_schema(document: Mapping[str, Any], key: str, part: str = "payload") -> Any:
    components = document["components"]
    return inline(components["messages"][key][part], components["schemas"])


def closed(schema: Any) -> Any:
    """``schema`` refusing properties it does not list: a payload field the document does not
    describe fails validation."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if "properties" in result and "additionalProperties" not in result:
        result["additionalProperties"] = False
    return result


def assert_conforms(document: Mapping[str, Any], key: str, payload: Any) -> None:
    validator = jsonschema_rs.validator_for(closed(message_schema(document, key)))
    problems = [error.message for error in validator.iter_errors(payload)]
    assert not problems, (key, payload, problems)


# -- the document -----------------------------------------------------------------------------


async def test_document_is_served_without_a_token(
    hub_factory: Any, hub_settings: SettingsFactory
) -> None:
    hub = await hub_factory(hub_settings(kafka_topic="acme.events", kafka_dlq_topic="acme.dead"))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{hub.url}/api/asyncapi.json") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        served = await response.json()
    settings = hub.app[SETTINGS]
    assert served == json.loads(document_bytes(settings))
    assert served["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in served["channels"].values()}
    assert addresses == {NOTIFICATIONS_NAMESPACE, CHAT_NAMESPACE, "acme.events", "acme.dead"}
    socketio = served["servers"]["socketio"]
    assert (socketio["protocol"], socketio["pathname"]) == ("ws", "/socket.io/")
    assert served["servers"]["kafka"]["protocol"] == "kafka"
    # Built once per process (per set of topics), then served from the cache.
    assert document_bytes(settings) is document_bytes(settings)


def test_parser_finds_no_errors(tmp_path: Path) -> None:
    document = default_document()
    assert errors_of(parser_diagnostics(document, tmp_path)) == []
    # The check is real: an operation sending a message of another channel is refused.
    broken = copy.deepcopy(document)
    broken["operations"]["chat_send_typing"]["messages"] = [
        {"$ref": "#/channels/notifications/messages/ackError"}
    ]
    assert errors_of(parser_diagnostics(broken, tmp_path)), "a broken document passed"


def resolve(document: Mapping[str, Any], node: Mapping[str, Any]) -> Any:
    """``node``, or what its local ``$ref`` (chain) points to."""
    while "$ref" in node:
        node = functools.reduce(operator.getitem, node["$ref"][2:].split("/"), document)
    return node


def _operations_on(document: Mapping[str, Any], address: str, action: str) -> set[str]:
    """The event names of the ``action`` operations on the channel at ``address``."""
    names: set[str] = set()
    for operation in document["operations"].values():
        if operation["action"] == action and (
            resolve(document, operation["channel"])["address"] == address
        ):
            names |= {resolve(document, ref)["name"] for ref in operation["messages"]}
    return names


def test_every_handled_event_is_a_documented_operation() -> None:
    """Every ``on_*`` handler of a namespace class (inherited ones too) is a ``receive``
    operation of its channel, and nothing else is: adding an event means documenting it."""
    document = default_document()
    assert set(NAMESPACE_CLASSES) == {NOTIFICATIONS_NAMESPACE, CHAT_NAMESPACE}
    for address, namespace_class in NAMESPACE_CLASSES.items():
        handlers = {
            name
            for name, _ in inspect.getmembers(namespace_class, inspect.isfunction)
            if name.startswith("on_") and name[3:] not in LIFECYCLE_EVENTS
        }
        documented = _operations_on(document, address, "receive")
        assert handlers == {"on_" + event.replace(":", "_") for event in documented}, address
    # Every client event is answered: its reply is the event's own ack or the error ack.
    for key, operation in document["operations"].items():
        if operation["action"] == "receive" and not key.startswith("kafka_"):
            replies = [ref["$ref"].rsplit("/", 1)[1] for ref in operation["reply"]["messages"]]
            assert len(replies) == 2 and replies[1] == "ackError", key


def test_every_emitted_event_is_a_documented_operation() -> None:
    """The events the hub emits: the delivery's constants on ``/notifications``, and every
    ``event="..."`` the services pass to the chat emitter on ``/chat``."""
    document = default_document()
    assert _operations_on(document, NOTIFICATIONS_NAMESPACE, "send") == {
        NEW_EVENT,
        READ_EVENT,
        UPDATED_EVENT,
        BROADCAST_EVENT,
        PREFERENCES_EVENT,
    }
    emitted: set[str] = set()
    for path in (HUB / "services").glob("*.py"):
        emitted |= set(re.findall(r'\bevent="([^"]+)"', path.read_text()))
    assert emitted, "no chat emits found: the pattern is out of date"
    # And those the chat delivery and the presence service emit under their constants.
    emitted |= {NEW_MESSAGE_EVENT, PRESENCE_EVENT}
    assert _operations_on(document, CHAT_NAMESPACE, "send") == emitted


def test_payload_schemas_are_the_models_schemas() -> None:
    """Incoming payloads are described by exactly the schema of the model the handler
    validates with; acks and server events by their models' serialization schemas."""
    document = default_document()
    for namespace in NAMESPACES:
        namespace_class = NAMESPACE_CLASSES[namespace.address]
        for event in namespace.receives:
            expected = model_schema(event.payload, "validation")
            assert message_schema(document, message_key(event.name, "in")) == expected
            ack = message_schema(document, message_key(event.name, "ack"))
            assert ack == model_schema(event.ack, "serialization")
            # ... and that model is the one the handler validates the payload with.
            handler = getattr(namespace_class, "on_" + event.name.replace(":", "_"))
            assert f"{event.payload.__name__}.model_validate(" in inspect.getsource(handler)
        for server_event in namespace.sends:
            assert message_schema(document, message_key(server_event.name, "out")) == model_schema(
                server_event.payload, "serialization"
            )
    assert message_schema(document, "crmEvent") == model_schema(EventEnvelope, "validation")
    headers = message_schema(document, "deadLetter", "headers")
    assert set(headers["properties"]) == {
        "error",
        "source-topic",
        "source-partition",
        "source-offset",
    }


def test_model_examples_validate() -> None:
    """Examples shown in the document are accepted by the models they illustrate."""
    models = {event.payload for ns in NAMESPACES for event in ns.receives}
    models |= {event.ack for ns in NAMESPACES for event in ns.receives}
    models |= {event.payload for ns in NAMESPACES for event in ns.sends}
    for model in models:
        extra = model.model_config.get("json_schema_extra")
        for example in extra.get("examples", []) if isinstance(extra, dict) else []:
            model.model_validate(example)


def test_topics_follow_the_settings() -> None:
    settings = Settings(_env_file=None, kafka_topic="a.events", kafka_dlq_topic="a.dlq")  # type: ignore[call-arg]
    document = build_document(Topology.of(settings))
    assert document["channels"]["crmEvents"]["address"] == "a.events"
    assert document["channels"]["crmEventsDeadLetters"]["address"] == "a.dlq"


# -- what a live hub sends conforms -----------------------------------------------------------


async def test_live_payloads_and_acks_conform(
    hub: RunningHub, sio_connect: SioConnect, tenant: str
) -> None:
    """Every event and ack a real hub produces validates against its documented schema, with
    no field the document leaves out."""
    document = json.loads(document_bytes(hub.app[SETTINGS]))
    alice_token = hs256_token(tenant=tenant, user="alice")
    center = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, auth={"token": alice_token, "last_seq": 0}
    )
    service = ApiClient.for_service(hub.url, tenant)
    (created,) = await service.notify(["alice"], data={"deal_id": 42}, link="/deals/42")
    (notification,) = await center.wait_for(NEW_EVENT)
    assert notification["id"] == created
    assert_conforms(document, "notificationNewOut", notification)
    ack = await center.call("notification:mark_read", {"ids": [created]})
    assert_conforms(document, "notificationMarkReadAck", ack)
    ack = await center.call("notification:mark_read", {"all": True})
    assert_conforms(document, "notificationMarkReadAck", ack)
    for read in await center.wait_for(READ_EVENT, 2):
        assert_conforms(document, "notificationReadOut", read)
    alice_rest = ApiClient.for_user(hub.url, tenant, "alice")
    await alice_rest.post("/api/notifications/archive/", {"ids": [created]})
    await alice_rest.request("DELETE", f"/api/notifications/{created}/")
    # The replay's end (counts), two reads, an archive and a delete.
    for updated in await center.wait_for("notification:updated", 5):
        assert_conforms(document, "notificationUpdatedOut", updated)
    status, _ = await service.post("/api/broadcasts/", {"title": "Hi", "body": "all"})
    assert status == 202
    (announcement,) = await center.wait_for(BROADCAST_EVENT)
    assert_conforms(document, "broadcastOut", announcement)
    status, _ = await ApiClient.for_user(hub.url, tenant, "alice").request(
        "PATCH",
        "/api/preferences/",
        json={"categories": {"deals": {"email": False}, "news": {"push": True}}},
    )
    assert status == 200
    (preferences,) = await center.wait_for(PREFERENCES_EVENT)
    assert_conforms(document, "preferencesUpdatedOut", preferences)
    ack = await center.call("auth:refresh", {"token": hs256_token(tenant=tenant, user="alice")})
    assert_conforms(document, "authRefreshAck", ack)
    for bad in ({}, {"ids": ["1"], "all": True}):
        assert_conforms(document, "ackError", await center.call("notification:mark_read", bad))
    assert_conforms(document, "ackError", await center.call("auth:refresh", {"token": 1}))

    alice = await sio_connect(hub.url, CHAT_NAMESPACE, token=alice_token)
    bob = await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob"))
    sent = await alice.call(
        "message:send", {"to_user_id": "bob", "body": "hi", "client_msg_id": "c"}
    )
    assert_conforms(document, "messageSendAck", sent)
    message = sent["message"]
    (new,) = await bob.wait_for("message:new")
    assert_conforms(document, "messageNewOut", new)
    ack = await bob.call(
        "message:read", {"conversation_id": message["conversation_id"], "message_id": message["id"]}
    )
    assert_conforms(document, "messageReadAck", ack)
    (receipt,) = await alice.wait_for("message:read")
    assert_conforms(document, "messageReadOut", receipt)
    ack = await alice.call(
        "typing", {"conversation_id": message["conversation_id"], "typing": True}
    )
    assert_conforms(document, "typingAck", ack)
    (typing,) = await bob.wait_for("typing")
    assert_conforms(document, "typingOut", typing)
    refused = await alice.call("message:send", {"to_user_id": "alice", "body": "me"})
    assert_conforms(document, "ackError", refused)
    edited = await alice.call("message:edit", {"message_id": message["id"], "body": "hi!"})
    assert_conforms(document, "messageEditAck", edited)
    (updated,) = await bob.wait_for("message:updated")
    assert_conforms(document, "messageUpdatedOut", updated)
    deleted = await alice.call("message:delete", {"message_id": message["id"]})
    assert_conforms(document, "messageDeleteAck", deleted)
    assert_conforms(document, "messageUpdatedOut", (await bob.wait_for("message:updated", 2))[1])
    assert_conforms(document, "ackError", await bob.call("message:delete", {"message_id": "1"}))
    # Presence: a user with a conversation with alice comes online.
    await ApiClient.for_user(hub.url, tenant, "carol").post(
        "/api/messages/send/", {"to_user_id": "alice", "body": "hey"}
    )
    await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="carol"))
    (presence,) = await alice.wait_for("presence")
    assert_conforms(document, "presenceOut", presence)
