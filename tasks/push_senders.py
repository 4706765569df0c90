"""What a push sender answers, and how HTTP answers of push services map onto it.

Each channel has its sender (``tasks.webpush``, ``tasks.fcm``, ``tasks.apns``); the push
task (``tasks.push``) records the outcome: ``sent``; ``gone`` (the service no longer knows
the device: it is removed); ``retry`` (429, 5xx, a timeout: tried again with backoff, or
after the service's ``Retry-After``); ``failed`` (the request can never succeed as made).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from hub.services.pushes import PushClaim

Outcome = Literal["sent", "gone", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: Outcome
    detail: str | None = None
    # Seconds the push service asked us to wait (Retry-After), if it said.
    retry_after: float | None = None


class PushSender(Protocol):
    async def send(self, claim: PushClaim) -> PushResult:
        """One attempt, bounded by the push timeout; never raises for the service's
        answers or for network errors (those are ``retry``)."""
        ...

    async def close(self) -> None: ...


def collapse_id(claim: PushClaim) -> str:
    """The same for every attempt of one notification's push (Web Push ``Topic``, FCM
    ``collapse_key``, APNs ``apns-collapse-id``): if a worker dies after the push service
    took a push but before it was recorded, the attempt that takes over replaces that
    push on the device instead of showing it twice."""
    return f"n{claim.payload.get('id', claim.delivery_id)}"


def retry_after_seconds(header: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None if absent or bad."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def result_for_status(
    status: int, body: str, retry_after: str | None, *, gone: frozenset[int] = frozenset({404, 410})
) -> PushResult:
    """The usual meaning of a push service's HTTP status."""
    detail = f"HTTP {status}: {body[:300]}" if body else f"HTTP {status}"
    if 200 <= status < 300:
        return PushResult("sent")
    if status in gone:
        return PushResult("gone", detail)
    if status == 429 or status >= 500:
        return PushResult("retry", detail, retry_after_seconds(retry_after))
    return PushResult("failed", detail)


class NotConfigured:
    """The sender of a channel whose credentials are not set: every push ``failed``, saying
    which settings are missing (the devices are kept for when they are)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def send(self, claim: PushClaim) -> PushResult:
        return PushResult("failed", self.reason)

    async def close(self) -> None:
        return None
