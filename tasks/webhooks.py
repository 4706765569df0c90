"""Sending webhooks from the outbox (``hub.services.webhooks``): a sweeper in every worker
claims due deliveries (a few per endpoint at most), signs each per Standard Webhooks with
the ``standardwebhooks`` package and POSTs it; 2xx is ``sent``, anything else (or no
answer within the timeout) is retried with doubling backoff until the retry window ends
(``failed``). No task queue: a delivery is due the moment its transaction commits, and
the sweepers poll every ``NOTIFYHUB_EMAIL_SWEEP_INTERVAL_SECONDS``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from hub.metrics import WEBHOOKS
from hub.services import webhooks
from hub.services.leases import FAILED, RETRYING, SENT
from hub.services.webhooks import WebhookClaim
from hub.settings import Settings
from hub.webhook_urls import PublicOnlyResolver
from tasks.email import retry_delay
from tasks.sweeper import Sweeper

log = logging.getLogger(__name__)

USER_AGENT = "NotifyHub-Webhooks/1"


@dataclass
class WebhookResources:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    http: aiohttp.ClientSession

    @property
    def lease_seconds(self) -> float:
        # The request's timeout and then some: an attempt never outlives its lease.
        return 3 * self.settings.webhook_timeout_seconds


@asynccontextmanager
async def webhook_resources(
    settings: Settings, *, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[WebhookResources]:
    """Its own HTTP session: receivers are strangers, so no cookies, a bounded pool, and
    (unless private receivers are allowed) a resolver that only answers public addresses."""
    connector = aiohttp.TCPConnector(
        limit=settings.webhook_worker_concurrency,
        resolver=None if settings.webhooks_allow_private else PublicOnlyResolver(),
    )
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds),
        headers={"User-Agent": USER_AGENT},
    ) as http:
        yield WebhookResources(settings=settings, sessions=sessions, http=http)


def signed_request(claim: WebhookClaim, now: datetime) -> tuple[bytes, dict[str, str]]:
    """The body ``{"type", "timestamp", "data"}`` and the Standard Webhooks headers."""
    body = orjson.dumps(claim.payload)
    signature = Webhook(claim.secret).sign(claim.message_id, now, body.decode())
    return body, {
        "Content-Type": "application/json",
        "webhook-id": claim.message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


async def attempt_webhook(resources: WebhookResources, claim: WebhookClaim) -> None:
    now = datetime.now(UTC)
    body, headers = signed_request(claim, now)
    status_code: int | None = None
    error: str | None = None
    try:
        async with resources.http.post(claim.url, data=body, headers=headers) as response:
            status_code = response.status
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {(await response.text())[:300]}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = f"no answer: {exc!r}"[:500]
    if error is None:
        await webhooks.finish(
            sessions=resources.sessions,
            claim=claim,
            status=SENT,
            status_code=status_code,
            error=None,
        )
        WEBHOOKS.labels(SENT).inc()
        return
    settings = resources.settings
    created = claim.created_at if claim.created_at.tzinfo else claim.created_at.replace(tzinfo=UTC)
    deadline = created + timedelta(seconds=settings.webhook_retry_window_seconds)
    if now >= deadline:
        outcome, retry_at = FAILED, None
    else:
        delay = retry_delay(
            claim.attempt,
            base=settings.webhook_retry_base_seconds,
            cap=settings.webhook_retry_max_seconds,
        )
        outcome, retry_at = RETRYING, min(now + timedelta(seconds=delay), deadline)
    recorded = await webhooks.finish(
        sessions=resources.sessions,
        claim=claim,
        status=outcome,
        status_code=status_code,
        error=error,
        retry_at=retry_at,
    )
    if recorded:
        WEBHOOKS.labels(outcome).inc()


def webhook_sweeper(resources: WebhookResources) -> Sweeper[WebhookClaim]:
    settings = resources.settings

    async def claim_due(limit: int) -> list[WebhookClaim]:
        return await webhooks.claim_due(
            sessions=resources.sessions,
            limit=limit,
            lease_seconds=resources.lease_seconds,
            per_endpoint=settings.webhook_endpoint_concurrency,
        )

    async def attempt(claim: WebhookClaim, _claimed_at: float) -> None:
        await attempt_webhook(resources, claim)

    return Sweeper(
        what="webhook",
        claim_due=claim_due,
        attempt=attempt,
        concurrency=settings.webhook_worker_concurrency,
        interval=settings.email_sweep_interval_seconds,
    )
