"""The RabbitMQ source of CRM events: the same envelope as Kafka and REST, applied once.

Topology (declared at every connect, all durable, so a restarted broker keeps it):

- ``<queue>``: where CRM modules publish (persistent messages); declared with
  ``x-dead-letter-exchange=<dead_letter_exchange>`` so whatever RabbitMQ itself
  dead-letters (a TTL, an operator's reject) is kept too;
- ``<dead_letter_exchange>``: a fanout exchange;
- ``<queue>.dlq``: bound to it; dead letters stay there for an operator to read or replay.

The loop: deliveries (manual ack, at most ``prefetch`` unacknowledged) are collected into
batches of up to ``batch_max`` or ``batch_wait_seconds`` after the first; each batch is
decoded, the good events applied in one :class:`hub.intake.apply.EventApplier` call, and only
then acknowledged. Re-delivery is always safe: ``processed_events`` makes a second copy of an
event a no-op, which is what gives exactly-once effect on RabbitMQ's at-least-once delivery.

Dead letters (the design choice). A message ``decode_event`` refuses is *published by us*
to the dead-letter exchange, with the original body and properties plus headers ``error``
(the reason), ``source-queue``, ``source-exchange`` and ``source-routing-key``, and the
original is then *acked*, not rejected. Rejecting with ``requeue=False`` would let RabbitMQ
dead-letter it, but its ``x-death`` header has no room for our reason, and operators need
the reason. Publishing and acking are two operations, so to keep "in ``<queue>.dlq``
exactly once" the consuming channel runs in AMQP transaction mode (``tx.select``): a batch's
dead-letter publishes, acks and nacks are committed together by one ``tx.commit``. If the
process dies or the connection drops before the commit, neither the publish nor the ack
happened and the broker redelivers the message, which is then dead-lettered once. (RabbitMQ
documents tx atomicity for a single queue; across two queues a *broker* crash in the middle
of a commit is the one remaining window.) Publisher confirms cannot be combined with tx
mode, hence ``publisher_confirms=False`` on that channel.

An event that decodes but that the database refuses for its own content (SQLSTATE class
22 "data exception" or 23 "integrity constraint", e.g. a NUL character in a title) would
otherwise block its batch forever: the batch is retried one event at a time and only the
refused event is dead-lettered, with ``error`` starting "database refused the event".

Outages. When applying fails because a dependency is away (the database, Redis for email
tasks: ``OSError``, SQLAlchemy ``OperationalError``/``InterfaceError``, asyncpg connection
errors, SQLSTATE classes 08/40/53/57/58, :class:`hub.errors.Unavailable`) or for a reason
we cannot attribute to one event, nothing of the batch is acked: after a backoff (0.5 s
doubling to 10 s) its messages are nacked with ``requeue=True`` and come back; ``status``
says ``paused: <reason>`` meanwhile, and the first batch that applies resumes ``running``.
Good events are never dead-lettered for an outage.

Stopping: when ``stop`` is set the batch in hand is finished (applied, acked), the consumer
is cancelled and the channel and connection closed; deliveries not yet in a batch were
never acked, so the broker hands them to the next consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from pamqp.common import FieldTable

from hub.intake.envelope import BadEvent, EventEnvelope, decode_event
from hub.intake.runtime import (
    ApplyBatch,
    Backoff,
    apply_isolating,
    describe,
    quietly,
    sleep_or_stop,
)
from hub.rules import NotificationLimits

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS: Final = 10.0


@dataclass
class RabbitStats:
    """What the intake did, for logs, metrics and tests."""

    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    requeued: int = 0


@dataclass
class _Settled:
    """How a batch's messages end: acked, dead-lettered (then acked), or requeued later."""

    ack: list[AbstractIncomingMessage]
    dead: list[tuple[AbstractIncomingMessage, str]]
    retry: list[AbstractIncomingMessage]
    failure: str | None = None


class RabbitIntake:
    """Consume CRM events from a RabbitMQ queue until ``stop`` is set (see the module doc)."""

    def __init__(
        self,
        *,
        url: str,
        queue: str,
        dead_letter_exchange: str,
        apply: ApplyBatch,
        limits: NotificationLimits,
        prefetch: int = 200,
        batch_max: int = 200,
        batch_wait_seconds: float = 0.05,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 10.0,
    ) -> None:
        if prefetch < 1 or batch_max < 1:
            raise ValueError("prefetch and batch_max must be at least 1")
        self._url = url
        self._queue_name = queue
        self._dlx_name = dead_letter_exchange
        self._apply_batch = apply
        self._limits = limits
        self._prefetch = prefetch
        self._batch_max = batch_max
        self._batch_wait = batch_wait_seconds
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._state = "connecting"
        self._backoff = Backoff(retry_initial_seconds, retry_max_seconds)
        self._connection: AbstractRobustConnection | None = None
        # The AMQP channel known to be in tx mode; a robust reconnect brings a new one.
        self._tx_channel: aiormq.abc.AbstractChannel | None = None
        self.last_error: str | None = None
        self.stats = RabbitStats()

    @property
    def dead_letter_queue(self) -> str:
        return f"{self._queue_name}.dlq"

    @property
    def status(self) -> str:
        """``connecting``, ``running``, ``paused: <reason>`` or ``stopped``."""
        connection = self._connection
        if (
            self._state == "running"
            and connection is not None
            and not connection.connected.is_set()
        ):
            return "connecting"  # aio-pika is reconnecting on its own
        return self._state

    @property
    def ready(self) -> bool:
        return self.status == "running"

    def status_line(self) -> str:
        return "ok" if self.ready else f"{self.status} ({self.last_error})"

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the broker may be unreachable at first."""
        backoff = Backoff(self._retry_initial, self._retry_max)
        try:
            while not stop.is_set():
                self._state = "connecting"
                try:
                    connection = await aio_pika.connect_robust(
                        self._url,
                        timeout=CONNECT_TIMEOUT_SECONDS,
                        client_properties={"connection_name": "notifyhub intake"},
                    )
                except CONNECTION_EXCEPTIONS as exc:
                    self.last_error = f"rabbitmq: {describe(exc)}"
                    log.warning(
                        "RabbitMQ unreachable (%s); retrying in %.1fs", exc, backoff.current
                    )
                    await backoff.wait(stop)
                    continue
                self._connection = connection
                try:
                    await self._consume(connection, stop)
                    return
                except Exception as exc:
                    # Declaring failed (e.g. the queue exists with other arguments), the
                    # broker went away before the topology was in place, or a bug: start
                    # over on a new connection rather than leave serve without its intake.
                    # Nothing is lost: unacked deliveries go back when the connection closes.
                    self.last_error = f"rabbitmq: {describe(exc)}"
                    if isinstance(exc, CONNECTION_EXCEPTIONS):
                        log.warning(
                            "RabbitMQ intake interrupted (%s); retrying in %.1fs",
                            exc,
                            backoff.current,
                        )
                    else:
                        log.exception(
                            "RabbitMQ intake failed; restarting in %.1fs", backoff.current
                        )
                    await backoff.wait(stop)
                finally:
                    self._connection = None
                    self._tx_channel = None
                    await quietly(connection.close())
        finally:
            self._state = "stopped"

    async def _consume(self, connection: AbstractRobustConnection, stop: asyncio.Event) -> None:
        # Transaction mode (see the module doc) excludes publisher confirms.
        channel = await connection.channel(publisher_confirms=False)
        queue = await self._declare(channel)
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        consumer_tag = await queue.consume(inbox.put, no_ack=False)
        self._state = "running"
        self.last_error = None
        log.info(
            "consuming RabbitMQ queue %s (dead letters: %s)", queue.name, self.dead_letter_queue
        )
        try:
            while not stop.is_set():
                batch = await self._collect(inbox, stop)
                if batch:
                    # Finished even if stop is set meanwhile: the batch in hand is applied
                    # and acked before closing.
                    await self._process(batch, stop)
        finally:
            # No new deliveries while closing; what was delivered and not acked goes back
            # to the queue when the channel closes.
            await quietly(queue.cancel(consumer_tag))
            await quietly(channel.close())

    async def _declare(self, channel: AbstractRobustChannel) -> AbstractQueue:
        await channel.set_qos(prefetch_count=self._prefetch)
        dlx = await channel.declare_exchange(
            self._dlx_name, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dlq = await channel.declare_queue(self.dead_letter_queue, durable=True)
        await dlq.bind(dlx)
        return await channel.declare_queue(
            self._queue_name,
            durable=True,
            arguments={"x-dead-letter-exchange": self._dlx_name},
        )

    async def _collect(
        self, inbox: asyncio.Queue[AbstractIncomingMessage], stop: asyncio.Event
    ) -> list[AbstractIncomingMessage]:
        """Up to ``batch_max`` deliveries, or what came within ``batch_wait`` of the first."""
        first = await _first_or_stop(inbox, stop)
        if first is None:
            return []
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._batch_wait
        while len(batch) < self._batch_max and not stop.is_set():
            with contextlib.suppress(asyncio.QueueEmpty):
                batch.append(inbox.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await inbox.get())
            except TimeoutError:
                break
        return batch

    async def _process(self, batch: list[AbstractIncomingMessage], stop: asyncio.Event) -> None:
        # Deliveries of a channel that closed (the connection dropped) cannot be acked; the
        # broker has already put them back and delivers them again on the new channel.
        live = [message for message in batch if _channel_of(message) is not None]
        decoded: list[tuple[AbstractIncomingMessage, EventEnvelope]] = []
        dead: list[tuple[AbstractIncomingMessage, str]] = []
        for message in live:
            try:
                decoded.append((message, decode_event(message.body, self._limits)))
            except BadEvent as exc:
                dead.append((message, str(exc)))
        settled = await self._apply(decoded)
        settled.dead[:0] = dead
        self.stats.batches += 1
        await self._settle(ack=settled.ack, dead=settled.dead, nack=[])
        if settled.failure is None:
            if decoded:
                self._state = "running"
                self._backoff.reset()
            return
        # Paused: keep the messages unacked for a while (the database may come back
        # quickly), then hand them back to the queue and try again when they return.
        self._state = f"paused: {settled.failure}"
        delay = self._backoff.next()
        log.warning(
            "RabbitMQ intake paused (%s); requeueing %d events in %.1fs",
            settled.failure,
            len(settled.retry),
            delay,
        )
        await sleep_or_stop(stop, delay)
        await self._settle(ack=[], dead=[], nack=settled.retry)
        self.stats.requeued += len(settled.retry)

    async def _apply(
        self, decoded: Sequence[tuple[AbstractIncomingMessage, EventEnvelope]]
    ) -> _Settled:
        result = await apply_isolating(self._apply_batch, decoded)
        self.stats.applied += result.applied_events
        self.stats.duplicates += result.duplicates
        return _Settled(
            ack=result.applied, dead=result.refused, retry=result.retry, failure=result.failure
        )

    async def _settle(
        self,
        *,
        ack: Sequence[AbstractIncomingMessage],
        dead: Sequence[tuple[AbstractIncomingMessage, str]],
        nack: Sequence[AbstractIncomingMessage],
    ) -> None:
        """Publish dead letters, ack and nack in one AMQP transaction per delivering channel.

        Acks must go to the channel that delivered the message, so the dead-letter publish
        goes there too, which is what puts both in the same transaction.
        """
        by_channel: dict[int, tuple[aiormq.abc.AbstractChannel, list[_Op]]] = {}
        ops: list[_Op] = []
        ops.extend((message, "ack", None) for message in ack)
        ops.extend((message, "dead", reason) for message, reason in dead)
        ops.extend((message, "nack", None) for message in nack)
        for op in ops:
            channel = _channel_of(op[0])
            if channel is None:
                continue  # redelivered on the new channel already
            by_channel.setdefault(id(channel), (channel, []))[1].append(op)
        for channel, channel_ops in by_channel.values():
            try:
                await self._commit(channel, channel_ops)
            except (*CONNECTION_EXCEPTIONS, aiormq.exceptions.AMQPError) as exc:
                # Nothing of it happened; the broker redelivers these messages, and
                # applying them again is a no-op.
                log.warning(
                    "could not settle %d messages (%s); they come back", len(channel_ops), exc
                )
                if self._tx_channel is channel:
                    self._tx_channel = None

    async def _commit(self, channel: aiormq.abc.AbstractChannel, ops: Sequence[_Op]) -> None:
        if self._tx_channel is not channel:
            await channel.tx_select()
            self._tx_channel = channel
        dead_lettered = 0
        for message, action, given_reason in ops:
            if action == "dead":
                reason = given_reason or "dead-lettered"
                log.warning(
                    "dead-lettering a message from %s to %s: %s",
                    self._queue_name,
                    self.dead_letter_queue,
                    reason,
                )
                await channel.basic_publish(
                    message.body,
                    exchange=self._dlx_name,
                    routing_key=message.routing_key or self._queue_name,
                    properties=self._dead_letter_properties(message, reason),
                )
                dead_lettered += 1
                await message.ack()
            elif action == "ack":
                await message.ack()
            else:
                await message.nack(requeue=True)
        await channel.tx_commit()
        self.stats.dead_lettered += dead_lettered

    def _dead_letter_properties(
        self, message: AbstractIncomingMessage, reason: str
    ) -> aiormq.spec.Basic.Properties:
        headers: FieldTable = dict(message.headers or {})
        headers.update(
            {
                "error": reason,
                "source-queue": self._queue_name,
                "source-exchange": message.exchange or "",
                "source-routing-key": message.routing_key or "",
            }
        )
        # Not copied: ``expiration`` (a dead letter must not expire from the DLQ) and
        # ``user_id`` (RabbitMQ refuses a user id other than our own connection's).
        return aiormq.spec.Basic.Properties(
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
            priority=message.priority,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            message_id=message.message_id,
            timestamp=message.timestamp,
            message_type=message.type,
            app_id=message.app_id,
        )


_Op = tuple[AbstractIncomingMessage, Literal["ack", "dead", "nack"], str | None]


def _channel_of(message: AbstractIncomingMessage) -> aiormq.abc.AbstractChannel | None:
    try:
        return message.channel
    except aio_pika.exceptions.ChannelInvalidStateError:
        return None


async def _first_or_stop(
    inbox: asyncio.Queue[AbstractIncomingMessage], stop: asyncio.Event
) -> AbstractIncomingMessage | None:
    """The next delivery, or ``None`` once ``stop`` is set while waiting for one."""
    if not inbox.empty():
        return inbox.get_nowait()
    getter = asyncio.ensure_future(inbox.get())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # A cancelled ``Queue.get`` leaves its item in the queue.
        for task in (getter, stopper):
            if not task.done():
                task.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return None
