"""``POST /api/events/`` (service role): the Kafka envelope over HTTP, applied once (or
scheduled, with ``send_at``); ``POST /api/events/{event_id}/cancel/`` cancels a scheduled one."""

from __future__ import annotations

import orjson
from aiohttp import web

from api.errors import ApiError, json_response
from api.payloads import require_service
from hub.intake.envelope import MAX_EVENT_BYTES, BadEvent, validate_envelope
from hub.keys import NOTIFICATIONS, REST_EVENTS, SCHEDULE
from hub.responses import Cancelled, EventAccepted


async def take_event(request: web.Request) -> web.Response:
    principal = require_service(request)
    raw = await request.read()
    if len(raw) > MAX_EVENT_BYTES:
        raise ApiError(413, "payload_too_large", f"event larger than {MAX_EVENT_BYTES} bytes")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if isinstance(document, dict) and document.get("tenant_id") not in (None, principal.tenant_id):
        raise ApiError(403, "forbidden", "a service may only publish events of its own tenant")
    try:
        envelope = validate_envelope(document, request.app[NOTIFICATIONS].limits)
    except BadEvent as exc:
        raise ApiError(400, "validation_error", str(exc)) from None
    outcome = await request.app[REST_EVENTS]([envelope])
    reply = EventAccepted(event_id=envelope.event_id, duplicate=outcome.applied == 0)
    return json_response(reply.model_dump(mode="json"), status=202)


async def cancel_event(request: web.Request) -> web.Response:
    principal = require_service(request)
    await request.app[SCHEDULE].cancel(
        tenant_id=principal.tenant_id, event_id=request.match_info["event_id"]
    )
    return json_response(Cancelled(cancelled=True).model_dump(mode="json"))
