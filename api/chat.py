"""REST routes of 1-on-1 chat (the socket side: docs/protocol.md section 6)."""

from __future__ import annotations

from aiohttp import web

from api.errors import ApiError, json_response
from api.notifications import query_limit
from api.payloads import read_body
from hub.ids import parse_id
from hub.keys import CHAT, PRINCIPAL
from hub.responses import ConversationPage, MessagePage, ReadReceiptResult, SentMessage
from hub.schemas import RestEditMessageIn, RestReadIn, RestSendMessageIn


def query_after_seq(request: web.Request) -> int | None:
    raw = request.query.get("after_seq")
    if raw is None:
        return None
    value = parse_id(raw)
    if value is None:
        raise ApiError(400, "validation_error", "'after_seq' must be a non-negative integer")
    return value


async def send_message(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    payload = await read_body(request, RestSendMessageIn)
    result = await request.app[CHAT].send(
        tenant_id=principal.tenant_id,
        sender_id=principal.user_id,
        body=payload.body,
        to_user_id=payload.to_user_id,
        client_msg_id=payload.client_msg_id,
    )
    reply = SentMessage.model_validate({"message": result.message})
    return json_response(reply.model_dump(mode="json"), status=201 if result.created else 200)


async def list_conversations(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    page = await request.app[CHAT].conversations(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        limit=query_limit(request),
        cursor=request.query.get("cursor") or None,
    )
    reply = ConversationPage.model_validate({"items": page.items, "next_cursor": page.next_cursor})
    return json_response(reply.model_dump(mode="json"))


async def list_messages(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    history = await request.app[CHAT].messages(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        conversation_id=request.match_info["conversation_id"],
        limit=query_limit(request),
        cursor=request.query.get("cursor") or None,
        after_seq=query_after_seq(request),
    )
    reply = MessagePage.model_validate({"items": history.items, "next_cursor": history.next_cursor})
    return json_response(reply.model_dump(mode="json"))


async def mark_read(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    payload = await read_body(request, RestReadIn)
    unread = await request.app[CHAT].mark_read(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        conversation_id=request.match_info["conversation_id"],
        message_id=payload.message_id,
    )
    return json_response(ReadReceiptResult(ok=True, unread_count=unread).model_dump(mode="json"))


async def edit_message(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    payload = await read_body(request, RestEditMessageIn)
    message = await request.app[CHAT].edit(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        conversation_id=request.match_info["conversation_id"],
        message_id=request.match_info["message_id"],
        body=payload.body,
    )
    return json_response(SentMessage.model_validate({"message": message}).model_dump(mode="json"))


async def delete_message(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    message = await request.app[CHAT].delete(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        conversation_id=request.match_info["conversation_id"],
        message_id=request.match_info["message_id"],
    )
    return json_response(SentMessage.model_validate({"message": message}).model_dump(mode="json"))
