"""``POST /api/broadcasts/``: a tenant-wide announcement (service role)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from api.errors import json_response
from api.payloads import read_body, require_service
from hub.keys import REALTIME
from hub.services.broadcasts import broadcast
from hub.validation import BoundedData


class BroadcastIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    body: str = Field(max_length=5000)
    data: BoundedData = Field(default_factory=dict)


async def create_broadcast(request: web.Request) -> web.Response:
    principal = require_service(request)
    payload = await read_body(request, BroadcastIn)
    await broadcast(
        realtime=request.app[REALTIME],
        tenant_id=principal.tenant_id,
        title=payload.title,
        body=payload.body,
        data=payload.data,
    )
    accepted: dict[str, Any] = {"status": "accepted"}
    return json_response(accepted, status=202)
