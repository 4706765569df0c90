"""Reading request bodies and query strings into pydantic models, with clear 400s."""

from __future__ import annotations

from typing import TypeVar

import orjson
import pydantic
from aiohttp import web

from api.errors import ApiError
from hub.auth import Principal
from hub.keys import PRINCIPAL

Model = TypeVar("Model", bound=pydantic.BaseModel)


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """Parse the JSON body into ``model``; malformed JSON and invalid fields are 400."""
    raw = await request.read()
    try:
        document = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return model.model_validate(document)


def require_service(request: web.Request) -> Principal:
    """The caller, who must hold the ``service`` role (403 otherwise)."""
    principal = request[PRINCIPAL]
    if not principal.is_service:
        raise ApiError(403, "forbidden", "this route needs a token with the 'service' role")
    return principal
