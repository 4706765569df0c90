"""REST routes of the notification center (the socket side: docs/protocol.md section 5)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web

from api.errors import ApiError, json_response
from api.payloads import read_body, require_service
from hub.intake.envelope import BadEvent, scheduled_create
from hub.keys import NOTIFICATIONS, PRINCIPAL, REST_EVENTS
from hub.responses import (
    CreatedNotifications,
    InboxChangeResult,
    NotificationPage,
    ScheduledNotifications,
    UnreadCount,
)
from hub.schemas import CreateNotificationsIn, MarkReadIn, SelectionIn
from hub.services.common import iso_utc
from hub.services.inbox import Action
from hub.services.notifications import InboxChange

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return False
    if raw.lower() not in _BOOLEANS:
        raise ApiError(400, "validation_error", f"'{name}' must be true or false")
    return _BOOLEANS[raw.lower()]


def _query_text(request: web.Request, name: str) -> str | None:
    """A free-text filter; NUL (which PostgreSQL text cannot hold, so nothing stored has it)
    is a 400, not a database error."""
    raw = request.query.get(name) or None
    if raw is not None and "\x00" in raw:
        raise ApiError(400, "validation_error", f"'{name}' must not contain NUL characters")
    return raw


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
    page = await request.app[NOTIFICATIONS].page(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        limit=query_limit(request),
        cursor=request.query.get("cursor") or None,
        unread_only=_query_bool(request, "unread"),
        unseen_only=_query_flag(request, "seen", when=False),
        archived=_query_flag(request, "archived", when=True),
        category=_query_text(request, "category"),
    )
    reply = NotificationPage.model_validate(
        {
            "items": page.items,
            "next_cursor": page.next_cursor,
            "unread_count": page.counts.unread,
            "unseen_count": page.counts.unseen,
        }
    )
    return json_response(reply.model_dump(mode="json"))


def _query_flag(request: web.Request, name: str, *, when: bool) -> bool:
    """A filter that exists one way only (``seen=false``, ``archived=true``): the other value
    is the default, absent."""
    if request.query.get(name) in (None, ""):
        return False
    return _query_bool(request, name) is when


async def unread_count(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    counts = await request.app[NOTIFICATIONS].counts(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
    )
    reply = UnreadCount(unread_count=counts.unread, unseen_count=counts.unseen)
    return json_response(reply.model_dump(mode="json"))


def _changed(change: InboxChange) -> web.Response:
    reply = InboxChangeResult(
        updated=change.updated,
        unread_count=change.unread_count,
        unseen_count=change.unseen_count,
    )
    return json_response(reply.model_dump(mode="json"))


def inbox_action(
    action: Action, body: type[SelectionIn] = SelectionIn
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The view of ``POST /api/notifications/<action>/`` with ``{"ids"}`` or ``{"all"}``."""

    async def view(request: web.Request) -> web.Response:
        principal = request[PRINCIPAL]
        payload = await read_body(request, body)
        change = await request.app[NOTIFICATIONS].change(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            action=action,
            ids=payload.ids,
            all_items=payload.all,
        )
        return _changed(change)

    return view


async def delete_notification(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    change = await request.app[NOTIFICATIONS].change(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        action=Action.DELETE,
        ids=[request.match_info["notification_id"]],
    )
    return _changed(change)


mark_as_read = inbox_action(Action.READ, MarkReadIn)


async def create_notifications(request: web.Request) -> web.Response:
    principal = require_service(request)
    payload = await read_body(request, CreateNotificationsIn)
    if payload.send_at is not None:
        if payload.send_at.tzinfo is None:
            raise ApiError(400, "validation_error", "send_at needs a time zone offset")
        if payload.send_at > datetime.now(UTC):
            return await _schedule(request, principal.tenant_id, payload)
    # The tenant is the token's: a service can only ever address users of its own tenant.
    result = await request.app[NOTIFICATIONS].create(
        tenant_id=principal.tenant_id,
        user_ids=payload.user_ids,
        notification=payload.notification(),
        idempotency_key=payload.idempotency_key,
    )
    headers = {} if result.created else {"Idempotent-Replayed": "true"}
    reply = CreatedNotifications(ids=result.ids, suppressed=result.suppressed)
    return json_response(reply.model_dump(mode="json"), status=201, headers=headers)


async def _schedule(
    request: web.Request, tenant_id: str, payload: CreateNotificationsIn
) -> web.Response:
    try:
        envelope = scheduled_create(tenant_id, payload, request.app[NOTIFICATIONS].limits)
    except BadEvent as exc:
        raise ApiError(400, "validation_error", str(exc)) from None
    outcome = await request.app[REST_EVENTS]([envelope])
    duplicate = outcome.applied == 0
    assert envelope.send_at is not None
    reply = ScheduledNotifications(
        event_id=envelope.event_id, send_at=iso_utc(envelope.send_at), duplicate=duplicate
    )
    headers = {"Idempotent-Replayed": "true"} if duplicate else {}
    return json_response(reply.model_dump(mode="json"), status=202, headers=headers)
