"""The ``/notifications`` and ``/chat`` namespaces."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.auth import Principal
from hub.delivery.notifications import Subscriber
from hub.delivery.sinks import SocketIOSink
from hub.errors import InvalidInput
from hub.keys import DB_SESSIONS, NOTIFICATION_BUS, NOTIFICATION_DELIVERY
from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from hub.schemas import MarkReadIn
from hub.services import notifications
from hub.sockets.auth import AuthenticatedNamespace, refused


def last_seq_from(auth: object) -> int | None:
    """The client's resume point, ``auth.last_seq`` (a non-negative integer) if given."""
    if not isinstance(auth, Mapping) or auth.get("last_seq") is None:
        return None
    value = auth["last_seq"]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise refused("bad_request", "last_seq must be a non-negative integer")
    text = str(value)
    if not text.isdigit() or len(text) > 18:
        raise refused("bad_request", "last_seq must be a non-negative integer")
    return int(text)


class NotificationsNamespace(AuthenticatedNamespace):
    """Notification center of one user: replay, live ``notification:new``, mark read."""

    def __init__(self, namespace: str, app: Any) -> None:
        super().__init__(namespace, app)
        self._subscribers: dict[str, Subscriber] = {}

    async def after_connect(self, sid: str, principal: Principal, auth: object) -> None:
        last_seq = last_seq_from(auth)
        delivery = self.app[NOTIFICATION_DELIVERY]
        subscriber = delivery.subscribe(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            sink=SocketIOSink(self.server, sid, self.namespace),
            last_seq=last_seq,
        )
        self._subscribers[sid] = subscriber
        # Runs as a task: it starts after this handler returns and the CONNECT packet is
        # queued, so replayed notifications reach a connected client.
        delivery.start_replay(subscriber)

    async def on_disconnect(self, sid: str, *_reason: Any) -> None:
        subscriber = self._subscribers.pop(sid, None)
        if subscriber is not None:
            self.app[NOTIFICATION_DELIVERY].unsubscribe(subscriber)

    async def on_notification_mark_read(self, sid: str, payload: object = None) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise InvalidInput('payload must be an object: {"ids": [...]} or {"all": true}')
        request = MarkReadIn.model_validate(payload)
        principal = await self.principal(sid)
        updated, unread = await notifications.mark_read(
            sessions=self.app[DB_SESSIONS],
            bus=self.app[NOTIFICATION_BUS],
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            ids=request.ids,
            all_unread=request.all,
        )
        return {"ok": True, "updated": updated, "unread_count": unread}


class ChatNamespace(AuthenticatedNamespace):
    """1-on-1 chat between users of one tenant."""


NAMESPACE_CLASSES: dict[str, type[AuthenticatedNamespace]] = {
    NOTIFICATIONS_NAMESPACE: NotificationsNamespace,
    CHAT_NAMESPACE: ChatNamespace,
}
