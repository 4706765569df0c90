"""``POST /api/emails/send/`` and ``GET /api/emails/{id}/`` (service role)."""

from __future__ import annotations

from aiohttp import web

from api.errors import ApiError, json_response
from api.payloads import read_body, require_service
from hub.errors import NotFound
from hub.keys import EMAILS
from hub.responses import EmailQueued, EmailStatus
from hub.schemas import SendEmailIn
from hub.services.emails import EmailRequest


async def send_email(request: web.Request) -> web.Response:
    principal = require_service(request)
    payload = await read_body(request, SendEmailIn)
    if payload.tenant_id is not None and payload.tenant_id != principal.tenant_id:
        raise ApiError(403, "forbidden", "a service may only send email for its own tenant")
    email_id = await request.app[EMAILS].send(
        EmailRequest(
            tenant_id=principal.tenant_id,
            to_email=payload.to_email,
            subject=payload.subject,
            template_key=payload.template_key,
            context=payload.context,
        )
    )
    return json_response(EmailQueued(id=email_id).model_dump(mode="json"), status=202)


async def get_email(request: web.Request) -> web.Response:
    principal = require_service(request)
    email_id = request.match_info["email_id"]
    if "\x00" in email_id:  # no email has one; PostgreSQL could not even compare it
        raise NotFound("email not found")
    email = await request.app[EMAILS].status(tenant_id=principal.tenant_id, email_id=email_id)
    return json_response(EmailStatus.model_validate(email).model_dump(mode="json"))
