"""``POST /api/broadcasts/``: a tenant-wide announcement (service role)."""

from __future__ import annotations

from aiohttp import web

from api.errors import json_response
from api.payloads import read_body, require_service
from hub.keys import NOTIFICATIONS
from hub.responses import BroadcastAccepted
from hub.schemas import BroadcastIn


async def create_broadcast(request: web.Request) -> web.Response:
    principal = require_service(request)
    payload = await read_body(request, BroadcastIn)
    await request.app[NOTIFICATIONS].broadcast(
        tenant_id=principal.tenant_id,
        title=payload.title,
        body=payload.body,
        data=payload.data,
    )
    return json_response(BroadcastAccepted(status="accepted").model_dump(mode="json"), status=202)
