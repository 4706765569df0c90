"""Group commit: requests that arrive while a transaction runs share the next one.

Concurrent creates for the same users queue on those users' counter rows (their ``seq``
allocation locks them until the commit), so N creates in flight cost N transactions one
after the other: N counter upserts, N commits, N round trips of lock waiting. Gathered into
one transaction they cost one upsert (each counter moves by its count), one multi-row insert
and one commit. Nothing waits to be gathered: a request that finds no transaction running
starts one at once; only requests that arrive while one runs wait for it (as they would
have waited for its locks) and then go together.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from hub.errors import HubError

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True, slots=True)
class Sized(Generic[RequestT]):
    """A request with its weight (rows it writes) and an optional key that two requests of
    one batch must not share (an idempotency key: the second must see the first committed)."""

    request: RequestT
    rows: int
    exclusive_key: Hashable | None = None


class GroupCommit(Generic[RequestT, ResultT]):
    """Runs ``run_batch`` over the requests gathered while the previous batch ran.

    ``run_batch`` gets the requests in arrival order and returns one result per request
    (one transaction). If it fails with anything but a :class:`HubError` (which every
    request of the batch would have met alone: an outage, a limit), the requests are run
    again one by one, so that the one the database refused fails alone.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[RequestT]], Awaitable[Sequence[ResultT]]],
        *,
        max_rows: int,
    ) -> None:
        self._run_batch = run_batch
        self._max_rows = max_rows
        self._waiting: deque[tuple[Sized[RequestT], asyncio.Future[ResultT]]] = deque()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # transactions run (for tests and metrics)

    async def submit(self, item: Sized[RequestT]) -> ResultT:
        """The result of ``item.request`` once the batch it joined has committed."""
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._drain(), name="group-commit")
        # A caller that goes away does not take its request back: it was submitted, it is
        # written (as the same request run alone would be once its transaction began).
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                await self._run(self._next_batch())
        finally:
            # No await between the loop's last check and here: a submit after this line
            # starts a new runner.
            self._runner = None
            for _, future in self._waiting:
                if not future.done():
                    future.set_exception(RuntimeError("group commit stopped"))
            self._waiting.clear()

    def _next_batch(self) -> list[tuple[Sized[RequestT], asyncio.Future[ResultT]]]:
        batch = [self._waiting.popleft()]
        rows = batch[0][0].rows
        keys = {batch[0][0].exclusive_key}
        while self._waiting:
            item, _ = self._waiting[0]
            if rows + item.rows > self._max_rows:
                break
            if item.exclusive_key is not None and item.exclusive_key in keys:
                break  # keeps arrival order: it and those after it go in the next batch
            batch.append(self._waiting.popleft())
            rows += item.rows
            keys.add(item.exclusive_key)
        return batch

    async def _run(self, batch: list[tuple[Sized[RequestT], asyncio.Future[ResultT]]]) -> None:
        self.batches += 1
        try:
            results = await self._run_batch([item.request for item, _ in batch])
        except HubError as exc:
            _fail(batch, exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch, exc)
                return
            log.warning(
                "a batch of %d creates failed (%r); running them one by one", len(batch), exc
            )
            for single in batch:
                await self._run([single])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(batch: Sequence[tuple[object, asyncio.Future[ResultT]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
