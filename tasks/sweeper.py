"""Sweepers: take work that is due from the database and attempt it.

Retries wait in storage (``next_attempt_at``), not in sleeping tasks that would hold the
worker's slots; a sweeper, one per kind of work in each ``notifyhub worker`` (and inside
``serve`` on the embedded profile), claims what came due under a lease and runs the
attempts, at most ``concurrency`` at a time. The same query also picks up what fell through
the task queue: a ``sending`` record whose worker died after a second worker had
acknowledged its task (so the stream never hands it out again), and a ``queued`` one whose
task was lost. :class:`EmailSweeper` sweeps emails, ``tasks.push`` builds the push one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Generic, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from hub.services import emails
from tasks.email import attempt_email, release_held_back
from tasks.resources import EmailResources

log = logging.getLogger(__name__)

ClaimT = TypeVar("ClaimT")
# Claim up to N due records under a lease.
ClaimDue = Callable[[int], Coroutine[None, None, list[ClaimT]]]
# Run one claimed attempt; the float is time.monotonic() taken before the claim was sent.
Attempt = Callable[[ClaimT, float], Coroutine[None, None, None]]


class Sweeper(Generic[ClaimT]):
    """Claims due records every ``interval`` (sooner when an attempt frees a slot)."""

    def __init__(
        self,
        *,
        what: str,
        claim_due: ClaimDue[ClaimT],
        attempt: Attempt[ClaimT],
        concurrency: int,
        interval: float,
    ) -> None:
        self.what = what  # "email", "push": for task names and log lines
        self.claim_due = claim_due
        self.attempt = attempt
        self.concurrency = concurrency
        self.interval = interval
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._failing = False
        self.attempts_started = 0

    @property
    def running(self) -> int:
        return len(self._running)

    async def run(self) -> None:
        """Sweep until :meth:`stop`; then let the attempts in flight finish (see close)."""
        while not self._stopping:
            try:
                full = await self._step()
            except Exception:
                # Never stop sweeping: every retry in the database depends on it.
                log.exception("%s sweeper failed; carrying on", self.what)
                full = False
            if full:
                # More may be due, so claim again as soon as a slot frees.
                await self._nap(None)
            else:
                # Jitter keeps the sweepers of several workers from querying in step.
                await self._nap(self.interval * random.uniform(0.8, 1.2))

    async def _step(self) -> bool:
        """Claim what fits; True when every free slot was filled."""
        free = self.concurrency - len(self._running)
        taken = await self.sweep_once(free) if free > 0 else 0
        return bool(taken) and taken == free

    async def sweep_once(self, limit: int) -> int:
        """Claim up to ``limit`` due records and start their attempts; how many."""
        claimed_at = time.monotonic()
        try:
            claims = await self.claim_due(limit)
        except (SQLAlchemyError, OSError) as exc:
            if not self._failing:
                log.warning("%s sweeper cannot read the database: %s", self.what, exc)
            self._failing = True
            return 0
        if self._failing:
            log.info("%s sweeper reads the database again", self.what)
            self._failing = False
        for claim in claims:
            task = asyncio.create_task(self.attempt(claim, claimed_at), name=f"{self.what}-attempt")
            self._running.add(task)
            task.add_done_callback(self._done)
        self.attempts_started += len(claims)
        if claims:
            log.debug("%s sweeper took %d due records", self.what, len(claims))
        return len(claims)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def close(self, grace_seconds: float) -> None:
        """Wait up to ``grace_seconds`` for attempts in flight, then cancel the rest (their
        leases run out and another worker's sweeper takes them)."""
        self.stop()
        if self._running:
            _done, pending = await asyncio.wait(set(self._running), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The lease runs out and the record is swept again; say why it happened.
            log.error("%s attempt failed unexpectedly", self.what, exc_info=exc)

    async def _nap(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()


class EmailSweeper(Sweeper[emails.Claim]):
    """The email sweeper; it also probes SMTP servers that could not be reached, so the
    mail waiting for one goes as soon as it answers again."""

    @classmethod
    def for_worker(cls, resources: EmailResources) -> EmailSweeper:
        """The sweeper of a worker (or embedded serve) process.

        It keeps at most twice the SMTP pool's connections in flight (and never more
        than the worker's task slots): enough to keep the pool busy, while a backlog
        that comes due at once (a server back after an outage) is shared by every
        worker's sweeper instead of piling up behind the first one that looked.
        """
        settings = resources.settings
        return cls(
            resources,
            concurrency=min(settings.email_worker_concurrency, 2 * settings.smtp_max_connections),
            interval=settings.email_sweep_interval_seconds,
        )

    def __init__(self, resources: EmailResources, *, concurrency: int, interval: float) -> None:
        async def claim_due(limit: int) -> list[emails.Claim]:
            return await emails.claim_due(
                sessions=resources.sessions,
                limit=limit,
                lease_seconds=resources.settings.email_lease_seconds,
            )

        async def attempt(claim: emails.Claim, claimed_at: float) -> None:
            await attempt_email(resources, claim, claimed_at=claimed_at)

        super().__init__(
            what="email",
            claim_due=claim_due,
            attempt=attempt,
            concurrency=concurrency,
            interval=interval,
        )
        self.resources = resources
        self._probing: asyncio.Task[None] | None = None

    async def _step(self) -> bool:
        if self._probing is None or self._probing.done():
            # In the background: a probe of a silent server takes the SMTP timeout.
            self._probing = asyncio.create_task(self._probe(), name="smtp-probe")
        return await super()._step()

    async def _probe(self) -> None:
        """Servers that could not be reached and answer a probe again release the mail
        that waits for them (``SmtpPool.probe_unreachable``)."""
        try:
            for server in await self.resources.smtp.probe_unreachable():
                await release_held_back(self.resources, server)
        except Exception:
            # A probe must never stop the sweeping itself.
            log.exception("probing SMTP servers failed")

    async def close(self, grace_seconds: float) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
        await super().close(grace_seconds)
