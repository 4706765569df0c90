"""The scheduler: applies scheduled events when they come due and closes digest windows
whose time is up, through the same :class:`~hub.intake.apply.EventApplier` as every source.

One runs in every ``notifyhub worker`` (and in ``serve`` on the embedded profile). Each pass
claims what is due with ``FOR UPDATE SKIP LOCKED`` in the transaction that applies it, so
any number of schedulers split the work, and one that is killed loses nothing: its
transaction rolls back and the items are due again for the others (or for itself once
restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from sqlalchemy.exc import SQLAlchemyError

from hub.errors import Unavailable
from hub.intake.apply import EventApplier
from hub.metrics import SCHEDULE_LATENESS

log = logging.getLogger(__name__)


class Scheduler:
    """Polls every ``interval`` seconds; at once again while passes come back full."""

    def __init__(self, applier: EventApplier, *, interval: float, batch: int) -> None:
        self.applier = applier
        self.interval = interval
        self.batch = batch
        self._failing = False
        self.applied = 0  # scheduled events applied by this process (tests read it)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            full = False
            try:
                outcome = await self.applier.apply_due(self.batch)
            except (SQLAlchemyError, OSError, Unavailable) as exc:
                if not self._failing:
                    log.warning("scheduler cannot reach the database: %s", exc)
                self._failing = True
            except Exception:
                # Never stop: every scheduled event and open digest depends on it.
                log.exception("scheduler pass failed; carrying on")
            else:
                if self._failing:
                    log.info("scheduler reaches the database again")
                    self._failing = False
                self.applied += outcome.events
                for seconds in outcome.lateness:
                    SCHEDULE_LATENESS.observe(seconds)
                full = outcome.events >= self.batch or outcome.windows >= self.batch
            if full:
                await asyncio.sleep(0)
                continue
            # Jitter keeps the schedulers of several workers from polling in step.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval * random.uniform(0.8, 1.2))
