"""The delivery bus: after a commit, the writing process publishes; the nodes that hold
sockets of the users concerned listen.

It carries what is delivered in ``seq`` order with replay (notifications, chat messages),
what goes with them (read marks, announcements) and the other chat events (``typing``,
``message:read``, ``presence``, ``message:updated``).

With Redis configured it is Redis pub/sub, routed (:mod:`hub.delivery.routes`): each node
has a channel of its own and hears only what its sockets need; tenant announcements go on
one all-nodes channel. Without Redis, the embedded profile delivers in-process. Each
notification is JSON-encoded once, by the publisher; nodes pass the encoded text straight
to sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.delivery.routes import RouteTables, by_node, node_channel
from hub.errors import Unavailable
from hub.presence import PresenceStore, UserKey
from hub.realtime import CHAT_NAMESPACE
from hub.records import MessageRecord, NotificationRecord
from hub.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishedNotification:
    tenant_id: str
    user_id: str
    seq: int
    json: str  # the notification object, encoded once


@dataclass(frozen=True, slots=True)
class UserEvents:
    """Events for every connection of one user, sent in this order (``notification:read``
    then ``notification:updated`` for one read mark): ``(event name, encoded payload)``."""

    tenant_id: str
    user_id: str
    events: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TenantBroadcast:
    tenant_id: str
    json: str  # the ``broadcast`` payload


@dataclass(frozen=True, slots=True)
class PublishedMessage:
    tenant_id: str
    conversation_id: str
    seq: int
    participants: tuple[str, ...]  # both users of the conversation
    json: str  # the message object, encoded once


@dataclass(frozen=True, slots=True)
class UserEmit:
    """A Socket.IO event for the rooms of some users of a tenant (chat events other than
    ``message:new``): the receiving node emits it to its own sockets only."""

    tenant_id: str
    user_ids: tuple[str, ...]
    event: str
    json: str  # the payload, encoded once
    namespace: str


class BusListener(Protocol):
    async def on_new(self, items: Sequence[PublishedNotification]) -> None: ...

    async def on_user_events(self, events: UserEvents) -> None: ...

    async def on_message(self, item: PublishedMessage) -> None: ...

    async def on_broadcast(self, broadcast: TenantBroadcast) -> None: ...

    async def on_emit(self, emit: UserEmit) -> None: ...

    async def on_disconnect_user(self, tenant_id: str, user_id: str) -> None:
        """Close every connection of the user on this node (an erased user)."""

    async def on_resubscribed(self) -> None:
        """Messages may have been lost while the bus was away: catch up from the database."""


class NotificationBus(Protocol):
    async def publish_new(self, notifications: Sequence[NotificationRecord]) -> None: ...

    async def publish_user_events(
        self, *, tenant_id: str, user_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None: ...

    async def publish_broadcast(self, *, tenant_id: str, payload: dict[str, Any]) -> None: ...


class DisconnectBus(Protocol):
    async def publish_disconnect_user(self, *, tenant_id: str, user_id: str) -> None:
        """Every node closes the user's connections (``/notifications``, ``/chat``, legacy
        WebSockets)."""


class ChatBus(Protocol):
    async def publish_message(
        self, *, tenant_id: str, participants: tuple[str, str], message: MessageRecord
    ) -> None: ...


def notification_channel(settings: Settings) -> str:
    """The all-nodes channel (tenant announcements), next to the nodes' own."""
    return f"{settings.socketio_channel}:notifications"


def redis_bus(redis: Redis, settings: Settings, *, node: str | None = None) -> RedisBus:
    """The routed bus of any process of the hub; ``node``: the serve node that listens."""
    return RedisBus(
        redis,
        notification_channel(settings),
        routes=RouteTables.in_redis(redis, settings),
        node_channel=lambda name: node_channel(settings, name),
        node=node,
    )


def encode_events(events: Sequence[tuple[str, dict[str, Any]]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, orjson.dumps(payload).decode()) for name, payload in events)


def encode_new(notifications: Sequence[NotificationRecord]) -> list[PublishedNotification]:
    return [
        PublishedNotification(n["tenant_id"], n["user_id"], n["seq"], orjson.dumps(n).decode())
        for n in notifications
    ]


def encode_message(
    tenant_id: str, participants: tuple[str, str], message: MessageRecord
) -> PublishedMessage:
    return PublishedMessage(
        tenant_id,
        message["conversation_id"],
        message["seq"],
        participants,
        orjson.dumps(message).decode(),
    )


class LocalBus:
    """In-process delivery for the embedded profile (one process is the whole hub)."""

    def __init__(self) -> None:
        self.listener: BusListener | None = None

    async def publish_new(self, notifications: Sequence[NotificationRecord]) -> None:
        if self.listener is not None and notifications:
            await self.listener.on_new(encode_new(notifications))

    async def publish_user_events(
        self, *, tenant_id: str, user_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        if self.listener is not None:
            await self.listener.on_user_events(
                UserEvents(tenant_id, user_id, encode_events(events))
            )

    async def publish_broadcast(self, *, tenant_id: str, payload: dict[str, Any]) -> None:
        if self.listener is not None:
            await self.listener.on_broadcast(
                TenantBroadcast(tenant_id, orjson.dumps(payload).decode())
            )

    async def publish_message(
        self, *, tenant_id: str, participants: tuple[str, str], message: MessageRecord
    ) -> None:
        if self.listener is not None:
            await self.listener.on_message(encode_message(tenant_id, participants, message))

    async def publish_disconnect_user(self, *, tenant_id: str, user_id: str) -> None:
        if self.listener is not None:
            await self.listener.on_disconnect_user(tenant_id, user_id)


class RedisBus:
    """Routed Redis pub/sub: publishing works from any process (serve, worker, consume);
    ``run`` listens on the all-nodes channel and on ``node``'s own (serve nodes)."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        *,
        routes: RouteTables,
        node_channel: Callable[[str], str],
        node: str | None = None,
    ) -> None:
        self._redis = redis
        self.channel = channel
        self.routes = routes
        self._node_channel = node_channel
        self.node = node

    async def publish_new(self, notifications: Sequence[NotificationRecord]) -> None:
        if not notifications:
            return
        items = encode_new(notifications)
        nodes = await self._nodes(
            self.routes.notifications, [(n.tenant_id, n.user_id) for n in items]
        )
        shares: dict[str, list[list[Any]]] = {}
        for item in items:
            for node in nodes.get((item.tenant_id, item.user_id), ()):
                shares.setdefault(node, []).append(
                    [item.tenant_id, item.user_id, item.seq, item.json]
                )
        await self._publish_many({node: {"k": "new", "i": share} for node, share in shares.items()})

    async def publish_user_events(
        self, *, tenant_id: str, user_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        # One message for all of them: they reach each node, and each connection, in order.
        message = {"k": "user", "t": tenant_id, "u": user_id, "e": encode_events(events)}
        nodes = await self._nodes(self.routes.notifications, [(tenant_id, user_id)])
        await self._publish_many({node: message for node in nodes.get((tenant_id, user_id), ())})

    async def publish_broadcast(self, *, tenant_id: str, payload: dict[str, Any]) -> None:
        # A tenant's announcement may concern any node: the all-nodes channel.
        message = {"k": "bc", "t": tenant_id, "j": orjson.dumps(payload).decode()}
        try:
            await self._redis.publish(self.channel, orjson.dumps(message))
        except (RedisError, OSError) as exc:
            raise Unavailable("live delivery is unavailable (Redis does not answer)") from exc

    async def publish_message(
        self, *, tenant_id: str, participants: tuple[str, str], message: MessageRecord
    ) -> None:
        item = encode_message(tenant_id, participants, message)
        encoded = {
            "k": "msg",
            "t": item.tenant_id,
            "c": item.conversation_id,
            "s": item.seq,
            "p": item.participants,
            "j": item.json,
        }
        users = [(tenant_id, user_id) for user_id in participants]
        nodes = by_node(await self._nodes(self.routes.chat, users), users)
        await self._publish_many({node: encoded for node in nodes})

    async def emit_to_users(
        self,
        *,
        tenant_id: str,
        user_ids: Sequence[str],
        event: str,
        data_json: str,
        namespace: str,
    ) -> None:
        """:class:`hub.realtime.UserEmits`: a chat event to the nodes holding these users."""
        users = [(tenant_id, user_id) for user_id in user_ids]
        table = self.routes.chat if namespace == CHAT_NAMESPACE else self.routes.notifications
        nodes = by_node(await self._nodes(table, users), users)
        await self._publish_many(
            {
                node: {
                    "k": "emit",
                    "t": tenant_id,
                    # Only the users this node holds: the others are not its business.
                    "u": [user_id for _, user_id in held],
                    "e": event,
                    "j": data_json,
                    "n": namespace,
                }
                for node, held in nodes.items()
            }
        )

    async def publish_disconnect_user(self, *, tenant_id: str, user_id: str) -> None:
        # Rare, and the user's sockets may be on any node (one connecting right now is not
        # in the route maps yet): the all-nodes channel, like a tenant announcement.
        message = {"k": "drop", "t": tenant_id, "u": user_id}
        try:
            await self._redis.publish(self.channel, orjson.dumps(message))
        except (RedisError, OSError) as exc:
            raise Unavailable("live delivery is unavailable (Redis does not answer)") from exc

    async def _nodes(
        self, table: PresenceStore, users: Sequence[UserKey]
    ) -> dict[UserKey, set[str]]:
        try:
            return await table.nodes_of_users(list(dict.fromkeys(users)))
        except (RedisError, OSError) as exc:
            raise Unavailable("live delivery is unavailable (Redis does not answer)") from exc

    async def _publish_many(self, messages: dict[str, dict[str, Any]]) -> None:
        """One message per node, on the node's channel, in one round trip."""
        if not messages:
            return  # nobody connected: nothing to send (a later connect replays)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for node, message in messages.items():
                    pipe.publish(self._node_channel(node), orjson.dumps(message))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable("live delivery is unavailable (Redis does not answer)") from exc

    async def run(
        self,
        listener: BusListener,
        *,
        subscribed: asyncio.Event | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Listen until cancelled; reconnect with backoff, then ask the listener to catch up."""
        backoff = 0.1
        first, lost = True, False
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    channels = [self.channel]
                    if self.node is not None:
                        channels.append(self._node_channel(self.node))
                    await pubsub.subscribe(*channels)
                    if subscribed is not None:
                        subscribed.set()
                    if lost:
                        log.warning("notification bus has Redis again; catching up")
                    if not first:
                        await listener.on_resubscribed()
                    first, lost, backoff = False, False, 0.1
                    async for message in pubsub.listen():
                        await self._dispatch(listener, message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # One line when the outage starts and one when it ends, not one per retry.
                if not lost:
                    log.warning("notification bus lost Redis (%s); retrying", exc)
                lost = True
                await sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _dispatch(self, listener: BusListener, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
            if message["k"] == "new":
                await listener.on_new(
                    [PublishedNotification(t, u, s, j) for t, u, s, j in message["i"]]
                )
            elif message["k"] == "user":
                events = tuple((name, data) for name, data in message["e"])
                await listener.on_user_events(UserEvents(message["t"], message["u"], events))
            elif message["k"] == "read":  # from a node not yet upgraded (rolling restart)
                events = (("notification:read", message["j"]),)
                await listener.on_user_events(UserEvents(message["t"], message["u"], events))
            elif message["k"] == "bc":
                await listener.on_broadcast(TenantBroadcast(message["t"], message["j"]))
            elif message["k"] == "emit":
                await listener.on_emit(
                    UserEmit(
                        message["t"], tuple(message["u"]), message["e"], message["j"], message["n"]
                    )
                )
            elif message["k"] == "drop":
                await listener.on_disconnect_user(message["t"], message["u"])
            elif message["k"] == "msg":
                await listener.on_message(
                    PublishedMessage(
                        message["t"], message["c"], message["s"], tuple(message["p"]), message["j"]
                    )
                )
        except Exception:  # one bad message must not stop delivery for everyone
            log.exception("notification bus message could not be delivered")
