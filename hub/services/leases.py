"""The lease state machine that emails and pushes share: records of work a worker does
once, claimed under a lease by conditional UPDATEs.

Status: ``queued`` -> ``sending`` -> ``sent`` | ``retrying`` (-> ``sending`` ...) |
``failed`` (and whatever final statuses a kind adds). A claim makes the record ``sending``
under a lease and counts an attempt; the attempt number is the lease's fencing token, so
only the claim that still holds the record can record a retry or a failure. A record
nobody acts on has ``next_attempt_at``, when a sweeper takes it: a retry that came due, a
``sending`` record whose worker died (its lease ran out), a ``queued`` one whose task was
lost.

A leased model has the columns ``id``, ``status``, ``attempts``, ``lease_until``,
``next_attempt_at`` and ``updated_at``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select

QUEUED, SENDING, SENT, RETRYING, FAILED = "queued", "sending", "sent", "retrying", "failed"
# The statuses a sweeper may still have to act on (the partial "due" indexes hold these).
PENDING = (QUEUED, SENDING, RETRYING)


def claimable(model: Any, now: datetime) -> Any:
    """Records an attempt may take now: queued, a retry that came due, a dead lease."""
    return or_(
        model.status == QUEUED,
        and_(model.status == RETRYING, model.next_attempt_at <= now),
        and_(model.status == SENDING, model.lease_until < now),
    )


def claim_values(model: Any, now: datetime, lease_seconds: float) -> dict[str, Any]:
    """What a claim writes: ``sending``, one more attempt, a lease until ``now + lease``."""
    until = now + timedelta(seconds=lease_seconds)
    # next_attempt_at follows the lease: if the lease is not renewed (the worker died), the
    # sweeper finds the record due when the lease ends.
    return {
        "status": SENDING,
        "attempts": model.attempts + 1,
        "lease_until": until,
        "next_attempt_at": until,
        "updated_at": now,
    }


def due_ids(model: Any, now: datetime, limit: int, *where: Any) -> Any:
    """The ids of up to ``limit`` due records, oldest due first, locked ``SKIP LOCKED`` so
    that the sweepers of several workers split them instead of queueing on each other's
    locks (SQLite has one writer at a time, which makes the claiming UPDATE exclusive).

    A materialized CTE, so the locked pick runs exactly once: as a plain IN (subquery),
    PostgreSQL may run it again per row, and with SKIP LOCKED each run picks other rows,
    taking far more than ``limit``."""
    return (
        select(model.id)
        .where(model.status.in_(PENDING), model.next_attempt_at <= now, *where)
        .order_by(model.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )


def held_by(model: Any, attempt: int, status: str) -> Any:
    """Whose outcome may be recorded: ``sent`` whoever holds the record (the receiver took
    it, unless it is recorded already); anything else only by the attempt that still
    holds it, so a worker that lost its lease never overwrites a newer attempt's state."""
    if status == SENT:
        return model.status != SENT
    return and_(model.status == SENDING, model.attempts == attempt)


def outcome_values(status: str, now: datetime, retry_at: datetime | None) -> dict[str, Any]:
    """What recording an outcome writes (the lease ends; a retry is due at ``retry_at``)."""
    return {
        "status": status,
        "updated_at": now,
        "lease_until": None,
        "next_attempt_at": retry_at if status == RETRYING else None,
    }
