"""The email task, under the name CRM code queues it by:
``send_notification_email.kiq(tenant_id=..., to_email=..., subject=..., template_key=...,
context={...})``.

One attempt = SMTP settings and template from the auth service, render, send through the
worker's connection pool. Transient failures are retried with capped exponential backoff
and jitter for the retry window; the retry waits in the database, not in a sleeping task
(the sweeper in ``tasks.sweeper`` takes it when due). Permanent failures end ``failed``
with the reason. The email record (keyed by the task id) and its lease, renewed while the
attempt runs, make redelivered or repeated tasks harmless: an attempt sends only while it
holds the email, and every attempt carries the same ``Message-ID``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from taskiq import AsyncBroker, Context, TaskiqDepends, async_shared_broker

from hub.errors import Unavailable
from hub.metrics import EMAILS, TASK_RETRIES
from hub.quiet_hours import quiet_until
from hub.services import emails, leases, preferences, unsubscribe
from hub.services.emails import Claim, EmailRequest
from tasks.auth_service import AuthServiceError, AuthServiceUnavailable, NotConfigured, SmtpConfig
from tasks.leases import LeaseLost
from tasks.resources import EmailResources
from tasks.smtp import (
    SmtpPermanentError,
    SmtpTransientError,
    build_message,
    server_name,
    stable_message_id,
)
from tasks.templates import TemplateError, render_email

log = logging.getLogger(__name__)

TASK_NAME = "notifyhub.send_notification_email"
RESOURCES_STATE = "email_resources"


class PermanentFailure(Exception):
    """The email can never be sent as asked; ``str(err)`` is the recorded reason."""


class QuietHours(Exception):
    """The recipient's quiet hours hold the email until ``until`` (UTC)."""

    def __init__(self, until: datetime) -> None:
        super().__init__("waiting out the user's quiet hours")
        self.until = until


TRANSIENT = (AuthServiceUnavailable, SmtpTransientError)
PERMANENT = (PermanentFailure, SmtpPermanentError, TemplateError, AuthServiceError)


@async_shared_broker.task(task_name=TASK_NAME)
async def send_notification_email(  # noqa: PLR0917 - the queued task's signature
    tenant_id: str,
    to_email: str,
    subject: str | None,
    template_key: str,
    context: dict[str, Any],
    task: Context = TaskiqDepends(),  # noqa: B008 - taskiq's dependency injection
) -> None:
    """Send one templated email of a tenant (idempotent per task id)."""
    resources: EmailResources = getattr(task.state, RESOURCES_STATE)
    await deliver(
        resources,
        email_id=task.message.task_id,
        request=EmailRequest(tenant_id, to_email, subject, template_key, context or {}),
    )


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with +-25 % jitter, so a recovering server is not hit in step."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return float(delay * random.uniform(0.75, 1.25))


async def deliver(resources: EmailResources, *, email_id: str, request: EmailRequest) -> None:
    """The task's path: make sure the record exists, claim it, make one attempt.

    Never waits for a retry: a transient failure is written down with its next attempt
    time and the task ends, leaving its worker slot to other emails; the sweeper
    (``tasks.sweeper``) makes the next attempt when it is due.
    """
    settings = resources.settings
    sessions = resources.sessions
    # A task queued by CRM code directly has no record yet; one queued by the hub has.
    await emails.record_email(
        sessions=sessions,
        email_id=email_id,
        request=request,
        sweep_after_seconds=settings.email_task_reclaim_seconds,
    )
    claimed_at = time.monotonic()
    claim = await emails.claim(
        sessions=sessions, email_id=email_id, lease_seconds=settings.email_lease_seconds
    )
    if claim is None:
        return  # sent, failed, a retry not due yet, or another worker is on it
    await attempt_email(resources, claim, claimed_at=claimed_at)


async def attempt_email(resources: EmailResources, claim: Claim, *, claimed_at: float) -> None:
    """One attempt of a claimed email, its outcome recorded.

    The lease is renewed while the attempt runs (waiting for a pooled connection included),
    and checked right before the message goes out: an attempt that lost it does not send.
    ``claimed_at`` is ``time.monotonic()`` from before the claim was sent.
    """
    lease = resources.leases.hold(claim, claimed_at=claimed_at)
    try:
        try:
            sent = await _attempt(resources, claim, guard=lease.check)
        except LeaseLost as exc:
            log.warning("email %s not sent: %s", claim.email_id, exc)
        except QuietHours as held:
            # Not a failure: due again when the window ends (the sweeper takes it then).
            lease.settled = True
            await emails.finish(
                sessions=resources.sessions,
                email_id=claim.email_id,
                attempt=claim.attempt,
                status=leases.RETRYING,
                error=str(held),
                retry_at=held.until,
            )
        except TRANSIENT as exc:
            lease.settled = True
            await _retry_later(resources, claim, exc)
        except PERMANENT as exc:
            lease.settled = True
            await emails.finish(
                sessions=resources.sessions,
                email_id=claim.email_id,
                attempt=claim.attempt,
                status=leases.FAILED,
                error=str(exc),
            )
        except Exception as exc:
            # Unforeseen (a bug, a dependency's surprise): retried like a transient failure,
            # so it ends within the retry window instead of being swept again for ever.
            log.exception("email %s attempt %d failed unexpectedly", claim.email_id, claim.attempt)
            lease.settled = True
            await _retry_later(resources, claim, exc)
        else:
            lease.settled = True
            await _record_sent(resources, claim, sent.id)
            if sent.recovered_server is not None:
                await release_held_back(resources, sent.recovered_server)
    finally:
        resources.leases.release(lease)


async def release_held_back(resources: EmailResources, server: str) -> None:
    """The server is back after an outage: what waits only for it is due now (the
    sweepers then send it through the pool as fast as the pool goes)."""
    try:
        count = await emails.retry_now(sessions=resources.sessions, error_prefix=f"{server}: ")
    except (SQLAlchemyError, OSError) as exc:
        log.warning("could not release mail held back for %s: %s", server, exc)
        return
    if count:
        log.info("%s answers again: %d held-back emails are due now", server, count)


async def _retry_later(resources: EmailResources, claim: Claim, exc: Exception) -> None:
    """Write down when to try again (or give up once the retry window is over)."""
    settings = resources.settings
    now = datetime.now(UTC)
    deadline = claim.created_at + timedelta(seconds=settings.email_retry_window_seconds)
    out_of_attempts = 0 < settings.email_max_attempts <= claim.attempt
    if now >= deadline or out_of_attempts:
        waited = (now - claim.created_at).total_seconds()
        await emails.finish(
            sessions=resources.sessions,
            email_id=claim.email_id,
            attempt=claim.attempt,
            status=leases.FAILED,
            error=f"gave up after {claim.attempt} attempts in {waited:.0f}s: {exc}",
        )
        return
    delay = retry_delay(
        claim.attempt,
        base=settings.email_retry_base_seconds,
        cap=settings.email_retry_max_seconds,
    )
    # The last attempt falls on the end of the window rather than past it.
    retry_at = min(now + timedelta(seconds=delay), deadline)
    recorded = await emails.finish(
        sessions=resources.sessions,
        email_id=claim.email_id,
        attempt=claim.attempt,
        status=leases.RETRYING,
        error=str(exc),
        retry_at=retry_at,
    )
    if recorded:
        TASK_RETRIES.labels(TASK_NAME).inc()
        log.info(
            "email %s attempt %d failed (%s); next attempt in %.1fs",
            claim.email_id,
            claim.attempt,
            exc,
            (retry_at - now).total_seconds(),
        )


async def _record_sent(resources: EmailResources, claim: Claim, message_id: str) -> None:
    """Record ``sent``, trying a little longer if the database hiccups: an unrecorded send
    is sent again once its lease runs out."""
    EMAILS.labels(leases.SENT).inc()  # counted once, however many tries recording takes
    delay = 0.1
    give_up_at = time.monotonic() + resources.settings.email_lease_seconds / 2
    while True:
        try:
            await emails.finish(
                sessions=resources.sessions,
                email_id=claim.email_id,
                attempt=claim.attempt,
                status=leases.SENT,
                smtp_message_id=message_id,
            )
            return
        except (SQLAlchemyError, OSError):
            if time.monotonic() + delay > give_up_at:
                raise
            log.warning("email %s was sent but could not be recorded yet", claim.email_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@dataclass(frozen=True, slots=True)
class _Sent:
    id: str  # the Message-ID
    # host:port when this send was the first to reach the server after it could not be.
    recovered_server: str | None


async def _attempt(resources: EmailResources, claim: Claim, *, guard: Callable[[], None]) -> _Sent:
    request = claim.request
    await _check_still_wanted(resources, request)
    await _check_quiet_hours(resources, request)
    auth = resources.auth_service
    if auth is None:
        raise PermanentFailure("no auth service configured (NOTIFYHUB_AUTH_SERVICE_URL)")
    config = await _smtp_config(resources, request.tenant_id)
    try:
        template = await auth.email_template(request.tenant_id, request.template_key)
    except NotConfigured:
        raise PermanentFailure(f"email template {request.template_key!r} not found") from None
    rendered = render_email(template, request.context, subject_override=request.subject)
    message = build_message(
        config,
        to_email=request.to_email,
        rendered=rendered,
        # The same on every attempt, so receivers can drop a copy of a repeated send.
        message_id=stable_message_id(claim.email_id, sender=config.from_email.strip()),
        headers=_unsubscribe_headers(resources, request),
    )
    recovered: list[str] = []
    message_id = await resources.smtp.send(
        config,
        message,
        before_transmit=guard,
        on_recovered=lambda: recovered.append(server_name(config)),
    )
    return _Sent(id=message_id, recovered_server=recovered[0] if recovered else None)


async def _check_still_wanted(resources: EmailResources, request: EmailRequest) -> None:
    """An email for a user is sent only if the user still wants it: preferences may have
    changed (an unsubscribe, say) since it was queued."""
    if request.user_id is None:
        return
    wanted = await preferences.user_wants(
        sessions=resources.sessions,
        tenant_id=request.tenant_id,
        user_id=request.user_id,
        category=request.category,
        channel="email",
    )
    if not wanted:
        what = f"category {request.category!r}" if request.category else "all categories"
        raise PermanentFailure(f"not sent: the recipient turned email off for {what}")


async def _check_quiet_hours(resources: EmailResources, request: EmailRequest) -> None:
    """An email for a user waits out the user's quiet hours (theirs, else the tenant's), in
    their time zone, as pushes do; in-app notifications are never held."""
    if request.user_id is None:
        return
    quiet = await preferences.quiet_hours_of(resources.sessions, request.tenant_id, request.user_id)
    until = quiet_until(quiet, datetime.now(UTC))
    if until is not None:
        raise QuietHours(until)


def _unsubscribe_headers(resources: EmailResources, request: EmailRequest) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe for an email of a category to a user."""
    if request.user_id is None or request.category is None:
        return {}
    settings = resources.settings
    return unsubscribe.list_unsubscribe_headers(
        public_url=settings.public_url,
        key=settings.unsubscribe_key,
        target=unsubscribe.Target(request.tenant_id, request.user_id, request.category),
    )


async def _smtp_config(resources: EmailResources, tenant_id: str) -> SmtpConfig:
    try:
        if resources.auth_service is None:  # no auth service configured: platform SMTP only
            raise NotConfigured(tenant_id)
        return await resources.auth_service.smtp_config(tenant_id)
    except NotConfigured:
        fallback = resources.platform_smtp
        if fallback is None:
            raise PermanentFailure(
                "tenant has no SMTP settings and no platform SMTP is configured"
            ) from None
        return fallback


async def kick_email(*, broker: AsyncBroker, email_id: str, request: EmailRequest) -> None:
    """Put the task on the queue under ``email_id`` (the task creates the record if needed)."""
    try:
        await (
            send_notification_email.kicker()
            .with_broker(broker)
            .with_task_id(email_id)
            .kiq(
                tenant_id=request.tenant_id,
                to_email=request.to_email,
                subject=request.subject,
                template_key=request.template_key,
                context=request.context,
            )
        )
    except (RedisError, OSError) as exc:
        raise Unavailable("the email queue is unavailable (Redis does not answer)") from exc


class TaskiqEmailQueue:
    """The :class:`hub.services.emails.EmailQueue` of the hub: Taskiq on ``broker``."""

    def __init__(self, broker: AsyncBroker) -> None:
        self.broker = broker

    async def kick(self, *, email_id: str, request: EmailRequest) -> None:
        await kick_email(broker=self.broker, email_id=email_id, request=request)
