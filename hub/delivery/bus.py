"""The delivery bus: after a commit, the writing process publishes; every node listens.

It carries what is delivered in ``seq`` order with replay (notifications, chat messages) and
what goes with them (read marks, announcements).

With Redis configured it is a pub/sub channel shared by all processes of the hub (serve,
worker, consume); without, the embedded profile delivers in-process. Each notification is
JSON-encoded once, by the publisher; nodes pass the encoded text straight to sockets.
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

from hub.errors import Unavailable
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


class BusListener(Protocol):
    async def on_new(self, items: Sequence[PublishedNotification]) -> None: ...

    async def on_user_events(self, events: UserEvents) -> None: ...

    async def on_message(self, item: PublishedMessage) -> None: ...

    async def on_broadcast(self, broadcast: TenantBroadcast) -> None: ...

    async def on_resubscribed(self) -> None:
        """Messages may have been lost while the bus was away: catch up from the database."""


class NotificationBus(Protocol):
    async def publish_new(self, notifications: Sequence[NotificationRecord]) -> None: ...

    async def publish_user_events(
        self, *, tenant_id: str, user_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None: ...

    async def publish_broadcast(self, *, tenant_id: str, payload: dict[str, Any]) -> None: ...


class ChatBus(Protocol):
    async def publish_message(
        self, *, tenant_id: str, participants: tuple[str, str], message: MessageRecord
    ) -> None: ...


def notification_channel(settings: Settings) -> str:
    """One channel per hub, next to the Socket.IO manager's."""
    return f"{settings.socketio_channel}:notifications"


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


class RedisBus:
    """Redis pub/sub: publishing works from any process; ``run`` listens (serve nodes)."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self._redis = redis
        self.channel = channel

    async def publish_new(self, notifications: Sequence[NotificationRecord]) -> None:
        if not notifications:
            return
        message = {
            "k": "new",
            "i": [[n.tenant_id, n.user_id, n.seq, n.json] for n in encode_new(notifications)],
        }
        await self._publish(message)

    async def publish_user_events(
        self, *, tenant_id: str, user_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        # One message for all of them: they reach each node, and each connection, in order.
        await self._publish({"k": "user", "t": tenant_id, "u": user_id, "e": encode_events(events)})

    async def publish_broadcast(self, *, tenant_id: str, payload: dict[str, Any]) -> None:
        await self._publish({"k": "bc", "t": tenant_id, "j": orjson.dumps(payload).decode()})

    async def publish_message(
        self, *, tenant_id: str, participants: tuple[str, str], message: MessageRecord
    ) -> None:
        item = encode_message(tenant_id, participants, message)
        await self._publish(
            {
                "k": "msg",
                "t": item.tenant_id,
                "c": item.conversation_id,
                "s": item.seq,
                "p": item.participants,
                "j": item.json,
            }
        )

    async def _publish(self, message: dict[str, Any]) -> None:
        try:
            await self._redis.publish(self.channel, orjson.dumps(message))
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
                    await pubsub.subscribe(self.channel)
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
            elif message["k"] == "msg":
                await listener.on_message(
                    PublishedMessage(
                        message["t"], message["c"], message["s"], tuple(message["p"]), message["j"]
                    )
                )
        except Exception:  # one bad message must not stop delivery for everyone
            log.exception("notification bus message could not be delivered")
