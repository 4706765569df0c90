"""``/api/preferences/`` (the caller's own) and ``/api/tenant/preferences/`` (service role)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from api.errors import json_response
from api.payloads import read_body, require_service
from hub.keys import DB_SESSIONS, NOTIFICATION_BUS, PRINCIPAL
from hub.responses import Preferences, TenantPreferences
from hub.schemas import PreferencesPatchIn, TenantPreferencesIn
from hub.services import preferences


def _reply(model: type[BaseModel], document: dict[str, Any]) -> web.Response:
    # exclude_unset: a category names only the channels decided for it (absent, not null).
    return json_response(model.model_validate(document).model_dump(mode="json", exclude_unset=True))


async def get_preferences(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    document = await preferences.get_preferences(
        sessions=request.app[DB_SESSIONS],
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
    )
    return _reply(Preferences, document)


async def patch_preferences(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    patch = await read_body(request, PreferencesPatchIn)
    document = await preferences.update_preferences(
        sessions=request.app[DB_SESSIONS],
        bus=request.app[NOTIFICATION_BUS],
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        # Only what the client sent: an absent field is kept, a null one removed.
        patch=patch.model_dump(exclude_unset=True),
    )
    return _reply(Preferences, document)


async def get_tenant_preferences(request: web.Request) -> web.Response:
    # The tenant is the token's: a service never reads another tenant's defaults.
    principal = require_service(request)
    document = await preferences.get_tenant_defaults(
        sessions=request.app[DB_SESSIONS], tenant_id=principal.tenant_id
    )
    return _reply(TenantPreferences, document)


async def put_tenant_preferences(request: web.Request) -> web.Response:
    principal = require_service(request)
    defaults = await read_body(request, TenantPreferencesIn)
    document = await preferences.put_tenant_defaults(
        sessions=request.app[DB_SESSIONS],
        tenant_id=principal.tenant_id,
        defaults=defaults.model_dump(),
    )
    return _reply(TenantPreferences, document)
