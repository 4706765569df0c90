"""``/api/preferences/`` (the caller's own) and ``/api/tenant/preferences/`` (service role)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from api.errors import json_response
from api.payloads import read_body, require_service
from hub.keys import PREFERENCES, PRINCIPAL
from hub.records import PreferencesRecord
from hub.responses import Preferences, TenantPreferences
from hub.schemas import PreferencesPatchIn, TenantPreferencesIn


def _reply(model: type[BaseModel], document: PreferencesRecord) -> web.Response:
    # exclude_unset: a category names only the channels decided for it (absent, not null).
    return json_response(model.model_validate(document).model_dump(mode="json", exclude_unset=True))


async def get_preferences(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    document = await request.app[PREFERENCES].effective(
        tenant_id=principal.tenant_id, user_id=principal.user_id
    )
    return _reply(Preferences, document)


async def patch_preferences(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    patch = await read_body(request, PreferencesPatchIn)
    document = await request.app[PREFERENCES].update(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        # Only what the client sent: an absent field is kept, a null one removed.
        patch=patch.model_dump(exclude_unset=True),
    )
    return _reply(Preferences, document)


async def get_tenant_preferences(request: web.Request) -> web.Response:
    # The tenant is the token's: a service never reads another tenant's defaults.
    principal = require_service(request)
    document = await request.app[PREFERENCES].tenant_defaults(tenant_id=principal.tenant_id)
    return _reply(TenantPreferences, document)


async def put_tenant_preferences(request: web.Request) -> web.Response:
    principal = require_service(request)
    defaults = await read_body(request, TenantPreferencesIn)
    document = await request.app[PREFERENCES].replace_tenant_defaults(
        tenant_id=principal.tenant_id, defaults=defaults.model_dump()
    )
    return _reply(TenantPreferences, document)
