"""``GET|PUT /api/tenant/settings/``: the caller's tenant's settings (role ``service``)."""

from __future__ import annotations

from aiohttp import web

from api.errors import json_response
from api.payloads import read_body, require_service
from hub.keys import TENANT_SETTINGS
from hub.responses import TenantSettings
from hub.schemas import TenantSettingsIn
from hub.services.tenants import TenantPolicy


def _reply(policy: TenantPolicy) -> web.Response:
    reply = TenantSettings(
        retention_days=policy.retention_days,
        chat_retention_days=policy.chat_retention_days,
        chat_edit_window_seconds=policy.chat_edit_window_seconds,
    )
    return json_response(reply.model_dump(mode="json"))


async def get_settings(request: web.Request) -> web.Response:
    principal = require_service(request)
    return _reply(await request.app[TENANT_SETTINGS].get(tenant_id=principal.tenant_id))


async def put_settings(request: web.Request) -> web.Response:
    principal = require_service(request)
    payload = await read_body(request, TenantSettingsIn)
    stored = await request.app[TENANT_SETTINGS].put(
        tenant_id=principal.tenant_id,
        settings=TenantPolicy(
            payload.retention_days, payload.chat_retention_days, payload.chat_edit_window_seconds
        ),
    )
    return _reply(stored)
