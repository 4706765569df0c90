"""The push task, ``notifyhub.send_push(delivery_id)``, and what it needs per process.

One attempt: claim the delivery under a lease, skip it if the user is connected (policy
``offline``), send it with the channel's sender, record the outcome. A transient failure
waits in the database (``next_attempt_at``) for the push sweeper, never in a sleeping task;
a device the push service no longer knows is removed. Claims are fenced by the attempt
number, and an attempt sends only while its lease surely holds (the lease outlives the
send's timeout several times over), so a killed worker's push is taken over and sent once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiohttp
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from taskiq import AsyncBroker, Context, TaskiqDepends, async_shared_broker

from hub.errors import Unavailable
from hub.metrics import TASK_RETRIES
from hub.quiet_hours import quiet_until
from hub.services import leases, pushes
from hub.services.devices import APNS, FCM, WEBPUSH, DeviceService
from hub.services.preferences import quiet_hours_of
from hub.services.pushes import PushClaim
from hub.settings import Settings
from tasks.apns import ApnsSender
from tasks.email import retry_delay
from tasks.fcm import FcmSender
from tasks.push_senders import NotConfigured, PushResult, PushSender
from tasks.sweeper import Sweeper
from tasks.webpush import WebPushSender

log = logging.getLogger(__name__)

TASK_NAME = "notifyhub.send_push"
RESOURCES_STATE = "push_resources"
RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 300.0


class Presence(Protocol):
    """Whether a user has a ``/notifications`` socket on any node."""

    async def is_connected(self, tenant_id: str, user_id: str) -> bool: ...


@dataclass
class PushResources:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    devices: DeviceService
    senders: dict[str, PushSender]
    # None: not known in this process; policy ``offline`` then pushes (a push too many
    # beats one missed).
    presence: Presence | None = None
    _warned_presence: bool = field(default=False, repr=False)

    @property
    def lease_seconds(self) -> float:
        # Three sends' worth: an attempt checks before sending that a whole timeout still
        # fits in its lease, so a live attempt never overlaps a takeover.
        return 3 * self.settings.push_timeout_seconds


def build_senders(settings: Settings, http: aiohttp.ClientSession) -> dict[str, PushSender]:
    """The channel senders these settings configure; the others answer ``failed``."""
    timeout = settings.push_timeout_seconds
    senders: dict[str, PushSender] = {}
    if settings.vapid_private_key is not None:
        senders[WEBPUSH] = WebPushSender(
            http=http,
            private_key=settings.vapid_private_key.get_secret_value(),
            subject=settings.vapid_subject,
            timeout=timeout,
        )
    else:
        senders[WEBPUSH] = NotConfigured("Web Push needs NOTIFYHUB_VAPID_PRIVATE_KEY")
    if settings.fcm_credentials_file:
        senders[FCM] = FcmSender(
            http=http,
            credentials_file=settings.fcm_credentials_file,
            url=settings.fcm_url,
            timeout=timeout,
        )
    else:
        senders[FCM] = NotConfigured("FCM needs NOTIFYHUB_FCM_CREDENTIALS_FILE")
    apns = (settings.apns_key_file, settings.apns_key_id, settings.apns_team_id)
    if all(apns) and settings.apns_topic:
        senders[APNS] = ApnsSender(
            key_file=settings.apns_key_file or "",
            key_id=settings.apns_key_id or "",
            team_id=settings.apns_team_id or "",
            topic=settings.apns_topic,
            url=settings.apns_url,
            timeout=timeout,
        )
    else:
        senders[APNS] = NotConfigured(
            "APNs needs NOTIFYHUB_APNS_KEY_FILE, _KEY_ID, _TEAM_ID and _TOPIC"
        )
    return senders


@asynccontextmanager
async def push_resources(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    http: aiohttp.ClientSession,
    presence: Presence | None = None,
) -> AsyncIterator[PushResources]:
    senders = build_senders(settings, http)
    try:
        yield PushResources(
            settings=settings,
            sessions=sessions,
            devices=DeviceService(sessions=sessions),
            senders=senders,
            presence=presence,
        )
    finally:
        for sender in senders.values():
            await sender.close()


@async_shared_broker.task(task_name=TASK_NAME)
async def send_push(
    delivery_id: int,
    task: Context = TaskiqDepends(),  # noqa: B008 - taskiq's dependency injection
) -> None:
    """Send one push delivery (idempotent: a delivery is sent at most once)."""
    resources: PushResources = getattr(task.state, RESOURCES_STATE)
    claimed_at = time.monotonic()
    claim = await pushes.claim(
        sessions=resources.sessions,
        delivery_id=delivery_id,
        lease_seconds=resources.lease_seconds,
    )
    if claim is not None:  # else: sent, final, not due yet, or another worker has it
        await attempt_push(resources, claim, claimed_at)


async def attempt_push(resources: PushResources, claim: PushClaim, claimed_at: float) -> None:
    settings = resources.settings
    if settings.push_policy == "offline" and await _connected(resources, claim):
        await pushes.finish(sessions=resources.sessions, claim=claim, status=pushes.SKIPPED)
        return
    quiet = await quiet_hours_of(resources.sessions, claim.tenant_id, claim.user_id)
    if (until := quiet_until(quiet, datetime.now(UTC))) is not None:
        await pushes.finish(
            sessions=resources.sessions,
            claim=claim,
            status=leases.RETRYING,
            error="waiting out the user's quiet hours",
            retry_at=until,
        )
        return
    if time.monotonic() + settings.push_timeout_seconds > claimed_at + resources.lease_seconds:
        return  # too late to send within the lease; the sweeper takes it over cleanly
    result = await resources.senders[claim.kind].send(claim)
    await record(resources, claim, result)


async def _connected(resources: PushResources, claim: PushClaim) -> bool:
    if resources.presence is None:
        if not resources._warned_presence:
            log.warning("no presence store in this process: pushing without checking")
            resources._warned_presence = True
        return False
    try:
        return await resources.presence.is_connected(claim.tenant_id, claim.user_id)
    except (RedisError, OSError) as exc:
        log.warning("presence unknown (%s): pushing", exc)
        return False


async def record(resources: PushResources, claim: PushClaim, result: PushResult) -> None:
    sessions = resources.sessions
    if result.outcome == "sent":
        await pushes.finish(sessions=sessions, claim=claim, status=leases.SENT)
    elif result.outcome == "gone":
        # Recorded first: forgetting the device ends its other pending pushes, this one too.
        await pushes.finish(sessions=sessions, claim=claim, status=pushes.GONE, error=result.detail)
        await resources.devices.forget(tenant_id=claim.tenant_id, device_id=claim.device_id)
        log.info("push device %s is gone (%s); removed", claim.device_id, result.detail)
    elif result.outcome == "failed":
        await pushes.finish(
            sessions=sessions, claim=claim, status=leases.FAILED, error=result.detail
        )
    else:
        await _retry_later(resources, claim, result)


async def _retry_later(resources: PushResources, claim: PushClaim, result: PushResult) -> None:
    """Due again after a backoff (or the service's Retry-After), until the window ends."""
    now = datetime.now(UTC)
    created = claim.created_at if claim.created_at.tzinfo else claim.created_at.replace(tzinfo=UTC)
    deadline = created + timedelta(seconds=resources.settings.push_retry_window_seconds)
    if now >= deadline:
        await pushes.finish(
            sessions=resources.sessions,
            claim=claim,
            status=leases.FAILED,
            error=f"gave up after {claim.attempt} attempts: {result.detail}",
        )
        return
    delay = retry_delay(claim.attempt, base=RETRY_BASE_SECONDS, cap=RETRY_MAX_SECONDS)
    if result.retry_after is not None:
        delay = max(delay, result.retry_after)
    recorded = await pushes.finish(
        sessions=resources.sessions,
        claim=claim,
        status=leases.RETRYING,
        error=result.detail,
        retry_at=min(now + timedelta(seconds=delay), deadline),
    )
    if recorded:
        TASK_RETRIES.labels(TASK_NAME).inc()


def push_sweeper(resources: PushResources) -> Sweeper[PushClaim]:
    """Takes due pushes (retries, lost tasks, a dead worker's) in a worker process."""

    async def claim_due(limit: int) -> list[PushClaim]:
        return await pushes.claim_due(
            sessions=resources.sessions, limit=limit, lease_seconds=resources.lease_seconds
        )

    async def attempt(claim: PushClaim, claimed_at: float) -> None:
        await attempt_push(resources, claim, claimed_at)

    return Sweeper(
        what="push",
        claim_due=claim_due,
        attempt=attempt,
        concurrency=resources.settings.push_worker_concurrency,
        interval=resources.settings.email_sweep_interval_seconds,
    )


class TaskiqPushQueue:
    """The :class:`hub.services.pushes.PushQueue` of the hub: Taskiq on ``broker``."""

    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker

    async def kick(self, delivery_ids: Sequence[int]) -> None:
        try:
            for delivery_id in delivery_ids:
                await send_push.kicker().with_broker(self.broker).kiq(delivery_id)
        except (RedisError, OSError) as exc:
            raise Unavailable("the push queue is unavailable (Redis does not answer)") from exc
