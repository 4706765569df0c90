"""The ``/notifications`` and ``/chat`` namespaces."""

from __future__ import annotations

from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from hub.sockets.auth import AuthenticatedNamespace


class NotificationsNamespace(AuthenticatedNamespace):
    """Notification center of one user: live ``notification:new`` and ``broadcast``."""


class ChatNamespace(AuthenticatedNamespace):
    """1-on-1 chat between users of one tenant."""


NAMESPACE_CLASSES: dict[str, type[AuthenticatedNamespace]] = {
    NOTIFICATIONS_NAMESPACE: NotificationsNamespace,
    CHAT_NAMESPACE: ChatNamespace,
}
