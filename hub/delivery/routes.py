"""Routing: each ``serve`` node hears only what its own sockets need.

Every node listens to a channel of its own, ``<channel>:node:<node id>``, and records in
Redis which users it holds sockets of, with the bookkeeping of :mod:`hub.presence` (one
round trip per batch of first-socket and last-socket transitions, per-node heartbeats, the
records of a node that stopped heartbeating removed by the others' sweeps). Two maps:

- ``/notifications`` (Socket.IO and legacy WebSockets): ``<channel>:routes:notifications:``,
  written by :class:`hub.delivery.notifications.NotificationDelivery` as connections come
  and go, with a short grace so a reconnecting client costs no round trip;
- ``/chat``: the chat presence map, ``<channel>:presence:chat:`` (same shape, written by the
  presence tracker: whoever is "online" in chat has a route).

A publisher looks up the nodes of the users of a batch (one pipelined round trip) and
publishes each node's share on that node's channel (a second one). A user on no node costs
no message at all. Tenant announcements stay on the all-nodes channel,
``<channel>:notifications``.

Why this is correct under churn (docs/architecture.md, "Routing"): a connection waits for
its route to be in Redis before it reads the database (replay or live baseline), so a
publisher that looked up the routes before that saw a commit the read sees too; when Redis
is slow the wait is bounded and the lag check of :mod:`hub.delivery.ordered` fetches what
the bus did not bring. A dead node's routes only cost a publish nobody hears.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis

from hub.presence import PresenceStore, PresenceTracker, RedisPresenceStore, UserKey
from hub.settings import Settings

# A user's route stays this long after their last socket on a node left: a reconnect (a
# page reload, a flaky network) costs no round trip. Messages routed meanwhile are dropped
# by the node, which holds no socket of the user.
ROUTE_GRACE_SECONDS = 1.0
# How long a connecting socket waits for its route before reading the database. Past it
# (Redis away), it goes on: the lag check repairs what the bus does not bring.
ROUTE_WAIT_SECONDS = 2.0


def node_channel(settings: Settings, node: str) -> str:
    return f"{settings.socketio_channel}:node:{node}"


def notification_routes_prefix(settings: Settings) -> str:
    return f"{settings.socketio_channel}:routes:notifications:"


def chat_routes_prefix(settings: Settings) -> str:
    """The chat presence map: the users online in chat, on which nodes."""
    return f"{settings.socketio_channel}:presence:chat:"


class RouteTables:
    """What a publisher needs: the nodes of users, for ``/notifications`` and ``/chat``."""

    def __init__(self, notifications: PresenceStore, chat: PresenceStore) -> None:
        self.notifications = notifications
        self.chat = chat

    @classmethod
    def in_redis(cls, redis: Redis, settings: Settings) -> RouteTables:
        return cls(
            RedisPresenceStore(redis, notification_routes_prefix(settings)),
            RedisPresenceStore(redis, chat_routes_prefix(settings)),
        )


def notification_tracker(store: PresenceStore, settings: Settings, *, node: str) -> PresenceTracker:
    """This node's records in the ``/notifications`` route map."""
    return PresenceTracker(
        store,
        grace_seconds=ROUTE_GRACE_SECONDS,
        node_ttl_seconds=settings.presence_node_ttl_seconds,
        node=node,
    )


def by_node(routes: dict[UserKey, set[str]], users: Sequence[UserKey]) -> dict[str, list[UserKey]]:
    """Which of ``users`` each node holds."""
    nodes: dict[str, list[UserKey]] = {}
    for user in users:
        for node in routes.get(user, ()):
            nodes.setdefault(node, []).append(user)
    return nodes


class RoutedPresence:
    """Push's "is this user connected to /notifications anywhere" (``offline`` policy), for
    processes with no sockets (workers): the route map, counting only nodes whose heartbeat
    holds, so a user of a node killed -9 is pushed to once its TTL has passed."""

    def __init__(self, store: PresenceStore) -> None:
        self._store = store

    async def is_connected(self, tenant_id: str, user_id: str) -> bool:
        return bool(await self._store.live_nodes_of((tenant_id, user_id), now=time.time()))
