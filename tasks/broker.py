"""The task broker: Redis streams in production, in-process on the embedded defaults.

Tasks are declared on taskiq's shared broker (``tasks.email``), so importing them has no
side effect; :func:`build_broker` picks the real broker from Settings and makes it the
default for those tasks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from redis.asyncio import Redis
from taskiq import AckableMessage, AsyncBroker, InMemoryBroker, async_shared_broker
from taskiq_redis import RedisStreamBroker

from hub.settings import Settings

CONSUMER_GROUP = "notifyhub-workers"


class ReclaimingStreamBroker(RedisStreamBroker):
    """``RedisStreamBroker`` that also reclaims a dead worker's tasks when the queue is idle.

    The stock ``listen`` runs XAUTOCLAIM only after XREADGROUP returned new messages, so on
    a quiet queue a task whose worker was killed stays pending for ever. Here every wait
    that returns empty-handed (at most every ``xread_block`` ms) also checks for tasks idle
    longer than ``idle_timeout`` and takes them over.
    """

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        async with Redis(connection_pool=self.connection_pool) as redis:
            claimed_at = 0.0
            while True:
                fetched: Any = await redis.xreadgroup(
                    self.consumer_group_name,
                    self.consumer_name,
                    {self.queue_name: ">"},
                    block=self.block,
                    noack=False,
                    count=self.count,
                )
                for _stream, entries in fetched or []:
                    for entry_id, fields in entries:
                        yield self._ackable(entry_id, fields)
                if time.monotonic() - claimed_at < self.block / 1000:
                    continue
                claimed_at = time.monotonic()
                reclaimed: Any = await redis.xautoclaim(
                    self.queue_name,
                    self.consumer_group_name,
                    self.consumer_name,
                    min_idle_time=self.idle_timeout,
                    start_id="0-0",
                    count=self.unacknowledged_batch_size,
                )
                for entry_id, fields in reclaimed[1]:
                    if fields:  # None for entries trimmed from the stream meanwhile
                        yield self._ackable(entry_id, fields)

    def _ackable(self, entry_id: Any, fields: Any) -> AckableMessage:
        return AckableMessage(
            data=fields[b"data"], ack=self._ack_generator(id=entry_id, queue_name=self.queue_name)
        )


def build_broker(settings: Settings) -> AsyncBroker:
    """The broker for these settings, made the default of the shared tasks."""
    broker: AsyncBroker
    if settings.redis_url:
        broker = ReclaimingStreamBroker(
            settings.redis_url,
            queue_name=f"{settings.socketio_channel}:tasks",
            consumer_group_name=CONSUMER_GROUP,
            # "0", not "$": tasks sent before the group exists are not dropped.
            consumer_id="0",
            idle_timeout=int(settings.email_task_reclaim_seconds * 1000),
            xread_block=1000,
        )
    else:
        broker = InMemoryBroker(max_async_tasks=settings.email_worker_concurrency)
    async_shared_broker.default_broker(broker)
    return broker
