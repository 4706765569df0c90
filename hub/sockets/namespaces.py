"""The ``/notifications`` and ``/chat`` namespaces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.auth import Principal
from hub.delivery.chat import ChatConnection
from hub.delivery.ordered import Subscriber
from hub.errors import InvalidInput
from hub.ids import parse_id
from hub.keys import (
    CHAT,
    CHAT_DELIVERY,
    NOTIFICATION_DELIVERY,
    NOTIFICATIONS,
    PRESENCE,
    TYPING,
)
from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from hub.records import MarkReadAck, MessageReadAck, MessageSentAck, MessageUpdatedAck, OkAck
from hub.schemas import (
    MarkReadIn,
    MessageDeleteIn,
    MessageEditIn,
    MessageReadIn,
    SendMessageIn,
    TypingIn,
)
from hub.sockets.auth import AuthenticatedNamespace, gone, refused
from hub.sockets.sinks import SocketIOSink


def last_seq_from(auth: object) -> int | None:
    """The client's resume point, ``auth.last_seq`` (a non-negative integer) if given."""
    if not isinstance(auth, Mapping) or auth.get("last_seq") is None:
        return None
    value = auth["last_seq"]
    last_seq = parse_id(value) if isinstance(value, int | str) else None
    if last_seq is None:
        raise refused("bad_request", "last_seq must be a non-negative integer")
    return last_seq


MAX_LAST_SEQS = 1000


def last_seqs_from(auth: object) -> dict[str, int]:
    """The client's resume points per conversation, ``auth.last_seqs``
    (``{"<conversation_id>": seq}``), if given. Ids that are not the user's conversations are
    ignored (they never match one); a malformed object refuses the connection."""
    if not isinstance(auth, Mapping) or auth.get("last_seqs") is None:
        return {}
    given = auth["last_seqs"]
    if not isinstance(given, Mapping) or len(given) > MAX_LAST_SEQS:
        raise refused(
            "bad_request",
            "last_seqs must be an object of at most "
            f"{MAX_LAST_SEQS} conversation ids to non-negative integers",
        )
    resume: dict[str, int] = {}
    for conversation_id, value in given.items():
        seq = parse_id(value) if isinstance(value, int | str) else None
        if seq is None:
            raise refused("bad_request", "each of last_seqs must be a non-negative integer")
        resume[str(conversation_id)] = seq
    return resume


class NotificationsNamespace(AuthenticatedNamespace):
    """Notification center of one user: replay, live ``notification:new``, mark read."""

    uses_rooms = False

    def __init__(self, namespace: str, app: Any) -> None:
        super().__init__(namespace, app)
        self._subscribers: dict[str, Subscriber] = {}

    async def after_connect(self, sid: str, principal: Principal, auth: object) -> None:
        last_seq = last_seq_from(auth)
        delivery = self.app[NOTIFICATION_DELIVERY]
        subscriber = delivery.subscribe_user(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            sink=SocketIOSink(self.server, sid, self.namespace),
            last_seq=last_seq,
        )
        self._subscribers[sid] = subscriber
        # Before the CONNECT answer: from then on, the client misses nothing live.
        await delivery.wait_routed(principal.tenant_id, principal.user_id)
        if not self.still_open(sid):
            await self.after_disconnect(sid)
            raise gone()
        # Runs as a task: it starts after this handler returns and the CONNECT packet is
        # queued, so replayed notifications reach a connected client.
        delivery.start_replay(subscriber)

    async def after_disconnect(self, sid: str) -> None:
        subscriber = self._subscribers.pop(sid, None)
        if subscriber is not None:
            self.app[NOTIFICATION_DELIVERY].unsubscribe(subscriber)

    async def on_notification_mark_read(self, sid: str, payload: object = None) -> MarkReadAck:
        if not isinstance(payload, dict):
            raise InvalidInput('payload must be an object: {"ids": [...]} or {"all": true}')
        request = MarkReadIn.model_validate(payload)
        principal = await self.principal(sid)
        marks = await self.app[NOTIFICATIONS].mark_read(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            ids=request.ids,
            all_unread=request.all,
        )
        return {"ok": True, "updated": marks.updated, "unread_count": marks.unread_count}


def _payload(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput("payload must be a JSON object")
    return payload


class ChatNamespace(AuthenticatedNamespace):
    """1-on-1 chat between users of one tenant: send, typing, read receipts."""

    def __init__(self, namespace: str, app: Any) -> None:
        super().__init__(namespace, app)
        # Per socket: conversation -> (peer, typing stamp), to relay typing without a
        # database read per keystroke and to end typing when the socket goes away.
        self._typing: dict[str, dict[str, tuple[str, str | None]]] = {}
        self._connections: dict[str, ChatConnection] = {}

    async def after_connect(self, sid: str, principal: Principal, auth: object) -> None:
        last_seqs = last_seqs_from(auth)
        self._connections[sid] = self.app[CHAT_DELIVERY].connect(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            sink=SocketIOSink(self.server, sid, self.namespace),
            last_seqs=last_seqs,
        )
        self._typing[sid] = {}
        self.app[PRESENCE].connected(tenant_id=principal.tenant_id, user_id=principal.user_id)
        # Before the CONNECT answer: from then on, the client misses nothing live.
        await self.app[CHAT_DELIVERY].wait_routed(principal.tenant_id, principal.user_id)
        if not self.still_open(sid):
            await self.after_disconnect(sid)
            raise gone()

    async def on_message_send(self, sid: str, payload: object = None) -> MessageSentAck:
        request = SendMessageIn.model_validate(_payload(payload))
        principal = await self.principal(sid)
        result = await self.app[CHAT].send(
            tenant_id=principal.tenant_id,
            sender_id=principal.user_id,
            body=request.body,
            to_user_id=request.to_user_id,
            conversation_id=request.conversation_id,
            client_msg_id=request.client_msg_id,
        )
        return {"ok": True, "message": result.message}

    async def on_message_edit(self, sid: str, payload: object = None) -> MessageUpdatedAck:
        request = MessageEditIn.model_validate(_payload(payload))
        principal = await self.principal(sid)
        message = await self.app[CHAT].edit(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            message_id=request.message_id,
            body=request.body,
        )
        return {"ok": True, "message": message}

    async def on_message_delete(self, sid: str, payload: object = None) -> MessageUpdatedAck:
        request = MessageDeleteIn.model_validate(_payload(payload))
        principal = await self.principal(sid)
        message = await self.app[CHAT].delete(
            tenant_id=principal.tenant_id, user_id=principal.user_id, message_id=request.message_id
        )
        return {"ok": True, "message": message}

    async def on_message_read(self, sid: str, payload: object = None) -> MessageReadAck:
        request = MessageReadIn.model_validate(_payload(payload))
        principal = await self.principal(sid)
        unread = await self.app[CHAT].mark_read(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            conversation_id=request.conversation_id,
            message_id=request.message_id,
        )
        return {"ok": True, "unread_count": unread}

    async def on_typing(self, sid: str, payload: object = None) -> OkAck:
        request = TypingIn.model_validate(_payload(payload))
        principal = await self.principal(sid)
        conversation = str(request.conversation_id)
        known = self._typing.setdefault(sid, {})
        if conversation in known:
            peer = known[conversation][0]
        else:
            peer = await self.app[CHAT].peer_of(
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                conversation_id=conversation,
            )
        stamp = await self.app[TYPING].update(
            tenant_id=principal.tenant_id,
            conversation_id=conversation,
            user_id=principal.user_id,
            peer_id=peer,
            typing=request.typing,
        )
        known[conversation] = (peer, stamp)
        return {"ok": True}

    async def after_disconnect(self, sid: str) -> None:
        connection = self._connections.pop(sid, None)
        if connection is not None:
            self.app[CHAT_DELIVERY].disconnect(connection)
        principal = await self.principal(sid)
        self.app[PRESENCE].disconnected(tenant_id=principal.tenant_id, user_id=principal.user_id)
        conversations = self._typing.pop(sid, {})
        if not any(stamp for _, stamp in conversations.values()):
            return
        for conversation, (peer, stamp) in conversations.items():
            if stamp is not None:
                await self.app[TYPING].stop(
                    tenant_id=principal.tenant_id,
                    conversation_id=conversation,
                    user_id=principal.user_id,
                    peer_id=peer,
                    stamp=stamp,
                )


NAMESPACE_CLASSES: dict[str, type[AuthenticatedNamespace]] = {
    NOTIFICATIONS_NAMESPACE: NotificationsNamespace,
    CHAT_NAMESPACE: ChatNamespace,
}
