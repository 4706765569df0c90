"""``/api/webhooks/``: a tenant's webhook endpoints and their deliveries (service role)."""

from __future__ import annotations

from aiohttp import web

from api.errors import json_response
from api.notifications import query_limit
from api.payloads import read_body, require_service
from hub.keys import WEBHOOKS
from hub.responses import WebhookCreated, WebhookDeliveryPage, WebhookList
from hub.schemas import CreateWebhookIn


async def create_webhook(request: web.Request) -> web.Response:
    principal = require_service(request)
    payload = await read_body(request, CreateWebhookIn)
    created = await request.app[WEBHOOKS].create(
        tenant_id=principal.tenant_id, url=payload.url, events=payload.events
    )
    reply = WebhookCreated.model_validate({**created.webhook, "secret": created.secret})
    return json_response(reply.model_dump(mode="json"), status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    principal = require_service(request)
    items = await request.app[WEBHOOKS].of_tenant(tenant_id=principal.tenant_id)
    return json_response(WebhookList.model_validate({"items": items}).model_dump(mode="json"))


async def delete_webhook(request: web.Request) -> web.Response:
    principal = require_service(request)
    await request.app[WEBHOOKS].delete(
        tenant_id=principal.tenant_id, webhook_id=request.match_info["webhook_id"]
    )
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    principal = require_service(request)
    page = await request.app[WEBHOOKS].deliveries(
        tenant_id=principal.tenant_id,
        webhook_id=request.match_info["webhook_id"],
        limit=query_limit(request),
        cursor=request.query.get("cursor") or None,
    )
    reply = WebhookDeliveryPage.model_validate(
        {"items": page.items, "next_cursor": page.next_cursor}
    )
    return json_response(reply.model_dump(mode="json"))
