"""REST routes of the notification center (CONTRACT "Notifications")."""

from __future__ import annotations

from aiohttp import web

from api.errors import ApiError, json_response
from api.payloads import read_body, require_service
from hub.keys import DB_SESSIONS, NOTIFICATION_BUS, NOTIFICATION_LIMITS, PRINCIPAL
from hub.schemas import CreateNotificationsIn, MarkReadIn
from hub.services import notifications

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() not in _BOOLEANS:
        raise ApiError(400, "validation_error", f"'{name}' must be true or false")
    return _BOOLEANS[raw.lower()]


def query_limit(request: web.Request) -> int | None:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "validation_error", "'limit' must be an integer") from None


async def list_notifications(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    page = await notifications.list_notifications(
        sessions=request.app[DB_SESSIONS],
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        limit=query_limit(request),
        cursor=request.query.get("cursor") or None,
        unread_only=_query_bool(request, "unread"),
        category=request.query.get("category") or None,
    )
    return json_response(
        {"items": page.items, "next_cursor": page.next_cursor, "unread_count": page.unread_count}
    )


async def unread_count(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    count = await notifications.count_unread(
        sessions=request.app[DB_SESSIONS],
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
    )
    return json_response({"unread_count": count})


async def mark_as_read(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    payload = await read_body(request, MarkReadIn)
    updated, unread = await notifications.mark_read(
        sessions=request.app[DB_SESSIONS],
        bus=request.app[NOTIFICATION_BUS],
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        ids=payload.ids,
        all_unread=payload.all,
    )
    return json_response({"updated": updated, "unread_count": unread})


async def create_notifications(request: web.Request) -> web.Response:
    principal = require_service(request)
    payload = await read_body(request, CreateNotificationsIn)
    # The tenant is the token's: a service can only ever address users of its own tenant.
    result = await notifications.create_notifications(
        sessions=request.app[DB_SESSIONS],
        bus=request.app[NOTIFICATION_BUS],
        tenant_id=principal.tenant_id,
        user_ids=payload.user_ids,
        notification=notifications.NewNotification(
            title=payload.title,
            body=payload.body,
            category=payload.category,
            data=payload.data,
            link=payload.link,
        ),
        limits=request.app[NOTIFICATION_LIMITS],
        idempotency_key=payload.idempotency_key,
    )
    headers = {} if result.created else {"Idempotent-Replayed": "true"}
    return json_response({"ids": result.ids}, status=201, headers=headers)
