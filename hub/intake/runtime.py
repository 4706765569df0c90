"""What every event source shares: how a failure is classified, and applying a batch so
that one event the database refuses is dead-lettered alone instead of stalling its batch.

Kafka, RabbitMQ and REST are adapters around :class:`hub.intake.apply.EventApplier`; this
module holds the decisions they must make the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import sqlalchemy.exc

from db.outage import causes
from hub.errors import Unavailable
from hub.intake.apply import BatchOutcome
from hub.intake.envelope import EventEnvelope

log = logging.getLogger(__name__)

# SQLSTATE classes of a database that is away or overloaded (08 connection, 40 rollback:
# serialization/deadlock, 53 resources, 57 operator intervention, 58 system): retry later.
_TRANSIENT_SQLSTATE_CLASSES: Final = frozenset({"08", "40", "53", "57", "58"})
# 22 data exception, 23 integrity constraint: this event's content, retrying never helps.
_EVENT_SQLSTATE_CLASSES: Final = frozenset({"22", "23"})
_OUTAGE_TYPES: Final = (
    Unavailable,
    OSError,  # ConnectionRefusedError, ConnectionResetError, TimeoutError (all OSError)
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # the connection pool is exhausted
)
# asyncpg's own errors reach us wrapped by SQLAlchemy (``InterfaceError`` above) or carry a
# SQLSTATE (``PostgresConnectionError`` is class 08, ``CannotConnectNowError`` 57P03, ...).

Failure = Literal["outage", "event", "unknown"]


def classify_failure(exc: BaseException) -> Failure:
    """Whether applying failed because a dependency is away (``outage``: retry the batch
    later), because of one event's content (``event``: dead-letter that event), or for a
    reason we cannot attribute (``unknown``: treated like an outage, nothing is lost)."""
    verdict: Failure = "unknown"
    for error in causes(exc):
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return "outage"
        if isinstance(error, _OUTAGE_TYPES):
            return "outage"
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            if sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
                return "outage"
            if sqlstate[:2] in _EVENT_SQLSTATE_CLASSES:
                verdict = "event"
        if isinstance(error, sqlalchemy.exc.DataError | sqlalchemy.exc.IntegrityError):
            verdict = "event"
    return verdict


def describe(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"[:300]


class IntakePaused(Exception):
    """A batch could not be applied because a dependency is away; retry it later."""


Source = TypeVar("Source")  # what carried the event: a Kafka record, a RabbitMQ message
ApplyBatch = Callable[[Sequence[EventEnvelope]], Awaitable[BatchOutcome]]


@dataclass
class Isolated(Generic[Source]):
    """How a batch ended: applied, refused by the database (to dead-letter, with the
    reason), or not tried because a dependency is away (``failure`` says which)."""

    applied: list[Source] = field(default_factory=list)
    refused: list[tuple[Source, str]] = field(default_factory=list)
    retry: list[Source] = field(default_factory=list)
    failure: str | None = None
    applied_events: int = 0
    duplicates: int = 0

    def count(self, outcome: BatchOutcome) -> None:
        self.applied_events += outcome.applied
        self.duplicates += outcome.duplicates


async def apply_isolating(
    apply: ApplyBatch, decoded: Sequence[tuple[Source, EventEnvelope]]
) -> Isolated[Source]:
    """Apply ``decoded`` in one transaction; if the database refuses it for one event's
    content, apply the events one by one and set aside only those it refuses."""
    result: Isolated[Source] = Isolated()
    if not decoded:
        return result
    try:
        result.count(await apply([event for _, event in decoded]))
    except Exception as exc:
        if classify_failure(exc) != "event":
            result.retry = [source for source, _ in decoded]
            result.failure = describe(exc)
            return result
    else:
        result.applied = [source for source, _ in decoded]
        return result
    for index, (source, event) in enumerate(decoded):
        try:
            result.count(await apply([event]))
        except Exception as exc:
            if classify_failure(exc) == "event":
                result.refused.append((source, f"database refused the event: {describe(exc)}"))
                continue
            result.retry = [source for source, _ in decoded[index:]]
            result.failure = describe(exc)
            break
        result.applied.append(source)
    return result


class EventSource(Protocol):
    """What /readyz and the consumer's heartbeat ask of any source."""

    @property
    def ready(self) -> bool: ...

    def status_line(self) -> str:
        """``ok``, or what it is doing instead and why (``paused: <reason>``...)."""
        ...


class Backoff:
    """Waits that double from ``initial`` up to ``maximum``; ``reset`` after a success."""

    def __init__(self, initial: float = 0.5, maximum: float = 10.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self.current = initial

    def reset(self) -> None:
        self.current = self._initial

    def next(self) -> float:
        """The delay to wait now; the following one doubles."""
        delay = self.current
        self.current = min(delay * 2, self._maximum)
        return delay

    async def wait(self, stop: asyncio.Event) -> None:
        """Wait the next delay, or less if ``stop`` is set meanwhile."""
        await sleep_or_stop(stop, self.next())


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def quietly(awaitable: Awaitable[Any]) -> None:
    """Await a close/stop whose failure must not mask what made us close."""
    try:
        await awaitable
    except Exception as exc:
        log.debug("ignored while closing: %s", exc)
