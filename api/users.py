"""``/api/users/{user_id}/``: a user's data rights, asked by the tenant's CRM (service role):
the export (GDPR art. 15) and the erasure (art. 17). See docs/data-rights.md."""

from __future__ import annotations

import asyncio
import logging

import pydantic
from aiohttp import web

from api.errors import ApiError, json_response
from api.payloads import require_service
from hub.keys import DATA_RIGHTS, SETTINGS
from hub.responses import UserErased
from hub.schemas import UserId

log = logging.getLogger(__name__)
_USER_ID = pydantic.TypeAdapter(UserId)


def _user_id(request: web.Request) -> str:
    value = request.match_info["user_id"]
    try:
        return _USER_ID.validate_python(value)
    except pydantic.ValidationError:
        raise ApiError(
            400, "validation_error", "'user_id' must be 1 to 128 characters, none a control one"
        ) from None


async def export_user(request: web.Request) -> web.StreamResponse:
    """One JSON document, streamed page by page (chunked): memory stays one page whatever
    the user's volume. Each chunk must be taken by the client within
    NOTIFYHUB_HTTP_BODY_TIMEOUT_SECONDS, else the connection is dropped."""
    principal = require_service(request)
    user_id = _user_id(request)
    chunks = request.app[DATA_RIGHTS].export(tenant_id=principal.tenant_id, user_id=user_id)
    # The first chunk before the status line: a database that does not answer is still a 503.
    first = await anext(chunks)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/json",
            "Content-Disposition": f'attachment; filename="export-{principal.tenant_id}.json"',
            "Cache-Control": "no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    write_timeout = request.app[SETTINGS].http_body_timeout_seconds
    try:
        async with asyncio.timeout(write_timeout):
            await response.write(first)
        async for chunk in chunks:
            async with asyncio.timeout(write_timeout):
                await response.write(chunk)
    except Exception as exc:
        # The status is sent already: the only honest signal left is a connection that ends
        # without the chunked terminator, so the client cannot take a cut document for whole.
        log.warning("export of a user stopped after it started: %r", exc)
        if request.transport is not None:
            request.transport.abort()
        await chunks.aclose()
        return response
    await response.write_eof()
    return response


async def erase_user(request: web.Request) -> web.Response:
    principal = require_service(request)
    user_id = _user_id(request)
    counts = await request.app[DATA_RIGHTS].erase(
        tenant_id=principal.tenant_id, user_id=user_id, requested_by=principal.user_id
    )
    return json_response(UserErased.model_validate({"erased": counts}).model_dump(mode="json"))
