"""Keeping the leases of emails in flight, for one worker (or embedded serve) process.

An attempt holds its email by a lease in the database (``hub.services.emails``). The lease
must outlive the attempt however long it waits for one of the pooled SMTP connections, so
this keeper renews every lease the process holds, all in one UPDATE every quarter lease.
If a renewal finds that another worker took an email over, or renewals failed for so long
that the lease may have run out, the attempt must not send: :meth:`Lease.check` says so
right before the message would go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.services import emails
from tasks.smtp import SendAborted

log = logging.getLogger(__name__)


class LeaseLost(SendAborted):
    """This attempt no longer holds its email; someone else may be sending it."""


@dataclass(eq=False, slots=True)
class Lease:
    email_id: str
    attempt: int
    # time.monotonic() until which the database lease surely holds: measured from before
    # the claim or renewal was sent, so a slow answer only shortens it.
    valid_until: float
    margin: float
    lost: bool = False
    # Set once the attempt is past sending and records its outcome, which ends the claim:
    # a renewal that no longer finds it is then expected, not a takeover.
    settled: bool = False

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease holds for at least ``margin`` more."""
        if self.lost:
            raise LeaseLost(f"email {self.email_id}: attempt {self.attempt} was taken over")
        if time.monotonic() + self.margin > self.valid_until:
            raise LeaseLost(
                f"email {self.email_id}: lease of attempt {self.attempt} could not be renewed"
            )


class LeaseKeeper:
    """Renews the leases of this process's attempts in flight until they are released."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], lease_seconds: float) -> None:
        self.sessions = sessions
        self.lease_seconds = lease_seconds
        # A quarter lease between renewals: one failed or late renewal still leaves half
        # the lease, more than the margin that check() demands.
        self.interval = lease_seconds / 4
        self._held: dict[tuple[str, int], Lease] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def hold(self, claim: emails.Claim, *, claimed_at: float) -> Lease:
        """Start renewing the lease of ``claim``; ``claimed_at`` is ``time.monotonic()``
        taken before the claim was sent."""
        lease = Lease(
            email_id=claim.email_id,
            attempt=claim.attempt,
            valid_until=claimed_at + self.lease_seconds,
            margin=self.interval,
        )
        self._held[(claim.email_id, claim.attempt)] = lease
        return lease

    def release(self, lease: Lease) -> None:
        self._held.pop((lease.email_id, lease.attempt), None)

    @property
    def held(self) -> int:
        return len(self._held)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="email-lease-keeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def renew_now(self) -> None:
        """One renewal of every held lease (the loop's body)."""
        leases = dict(self._held)
        if not leases:
            return
        started = time.monotonic()
        try:
            kept = await emails.renew(
                sessions=self.sessions, held=list(leases), lease_seconds=self.lease_seconds
            )
        except (SQLAlchemyError, OSError) as exc:
            # The leases keep their old end; check() stops sends once it comes near.
            if not self._failing:
                log.warning("email leases could not be renewed: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("email leases renewed again")
            self._failing = False
        for key, lease in leases.items():
            if key in kept:
                lease.valid_until = started + self.lease_seconds
            elif not lease.settled and self._held.get(key) is lease:
                lease.lost = True
                log.warning(
                    "email %s: attempt %d lost its lease; it will not send",
                    lease.email_id,
                    lease.attempt,
                )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.renew_now()
            except Exception:
                # Never let the keeper die: without it every attempt in flight would stop.
                log.exception("email lease renewal failed")
