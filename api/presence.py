"""REST presence: ``GET /api/presence/?user_ids=a,b`` within the caller's tenant."""

from __future__ import annotations

import pydantic
from aiohttp import web

from api.errors import ApiError, json_response
from hub.keys import PRESENCE, PRINCIPAL
from hub.responses import PresencePage
from hub.schemas import UserId

_USER_IDS = pydantic.TypeAdapter(list[UserId])


def query_user_ids(request: web.Request) -> list[str]:
    raw = request.query.get("user_ids", "")
    try:
        user_ids = _USER_IDS.validate_python([part for part in raw.split(",") if part])
    except pydantic.ValidationError:
        raise ApiError(400, "validation_error", "'user_ids' must be valid user ids") from None
    if not user_ids:
        raise ApiError(400, "validation_error", "'user_ids' must name at least one user")
    return user_ids


async def get_presence(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    items = await request.app[PRESENCE].statuses(
        tenant_id=principal.tenant_id, user_ids=query_user_ids(request)
    )
    return json_response(PresencePage.model_validate({"items": items}).model_dump(mode="json"))
