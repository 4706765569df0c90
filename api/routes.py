"""All REST routes, in one place. Trailing slashes are optional everywhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from api import (
    asyncapi,
    broadcasts,
    chat,
    emails,
    events,
    health,
    legacy_ws,
    notifications,
    openapi,
)

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _add(app: web.Application, method: str, path: str, view: View) -> None:
    app.router.add_route(method, path, view)
    if path.endswith("/") and path != "/":
        app.router.add_route(method, path.rstrip("/"), view)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    # Documented in api/openapi.py (OPERATIONS), which covers every route added here.
    app.router.add_get("/api/openapi.json", openapi.openapi_json)
    app.router.add_get("/api/docs", openapi.docs_page)
    app.router.add_get("/api/asyncapi.json", asyncapi.asyncapi_json)
    _add(app, "POST", "/api/broadcasts/", broadcasts.create_broadcast)
    _add(app, "GET", "/api/notifications/", notifications.list_notifications)
    _add(app, "POST", "/api/notifications/", notifications.create_notifications)
    _add(app, "GET", "/api/notifications/unread-count/", notifications.unread_count)
    _add(app, "POST", "/api/notifications/mark-as-read/", notifications.mark_as_read)
    _add(app, "POST", "/api/messages/send/", chat.send_message)
    _add(app, "GET", "/api/conversations/", chat.list_conversations)
    _add(app, "GET", "/api/conversations/{conversation_id}/messages/", chat.list_messages)
    _add(app, "POST", "/api/conversations/{conversation_id}/read/", chat.mark_read)
    _add(app, "POST", "/api/events/", events.take_event)
    _add(app, "POST", "/api/emails/send/", emails.send_email)
    _add(app, "GET", "/api/emails/{email_id}/", emails.get_email)
    _add(app, "GET", "/ws/notifications/{tenant_id}/{user_id}/", legacy_ws.legacy_notifications)
