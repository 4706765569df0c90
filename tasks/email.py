"""The email task, as the seed calls it: ``send_notification_email.kiq(tenant_id=...,
to_email=..., subject=..., template_key=..., context={...})``.

One attempt = SMTP settings and template from the auth service, render, send through the
worker's connection pool. Transient failures retry with exponential backoff and jitter;
permanent ones end ``failed`` with the reason. The email record (keyed by the task id) and
its lease make redelivered or repeated tasks harmless: a sent email is never sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from taskiq import AsyncBroker, Context, TaskiqDepends, async_shared_broker

from hub.errors import Unavailable
from hub.metrics import TASK_RETRIES
from hub.services import emails
from hub.services.emails import EmailRequest
from tasks.auth_service import AuthServiceError, AuthServiceUnavailable, NotConfigured, SmtpConfig
from tasks.resources import EmailResources
from tasks.smtp import SmtpPermanentError, SmtpTransientError, build_message
from tasks.templates import TemplateError, render_email

log = logging.getLogger(__name__)

TASK_NAME = "notifyhub.send_notification_email"
RESOURCES_STATE = "email_resources"


class PermanentFailure(Exception):
    """The email can never be sent as asked; ``str(err)`` is the recorded reason."""


TRANSIENT = (AuthServiceUnavailable, SmtpTransientError)
PERMANENT = (PermanentFailure, SmtpPermanentError, TemplateError, AuthServiceError)


@async_shared_broker.task(task_name=TASK_NAME)
async def send_notification_email(  # noqa: PLR0917 - the seed's signature
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
    settings = resources.settings
    sessions = resources.sessions
    # A seed-style .kiq() has no record yet; one queued over REST has (same id, no-op).
    await emails.record_email(sessions=sessions, email_id=email_id, request=request)
    while True:
        attempt = await emails.claim(
            sessions=sessions, email_id=email_id, lease_seconds=settings.email_lease_seconds
        )
        if attempt is None:
            return  # sent, failed, or another worker is on it
        try:
            message_id = await _attempt(resources, request)
        except TRANSIENT as exc:
            if attempt >= settings.email_max_attempts:
                await emails.finish(
                    sessions=sessions,
                    email_id=email_id,
                    attempt=attempt,
                    status=emails.FAILED,
                    error=f"gave up after {attempt} attempts: {exc}",
                )
                return
            delay = retry_delay(
                attempt,
                base=settings.email_retry_base_seconds,
                cap=settings.email_retry_max_seconds,
            )
            await emails.finish(
                sessions=sessions,
                email_id=email_id,
                attempt=attempt,
                status=emails.RETRYING,
                error=str(exc),
                retry_at=datetime.now(UTC) + timedelta(seconds=delay),
            )
            TASK_RETRIES.labels(TASK_NAME).inc()
            log.info(
                "email %s attempt %d failed (%s); retry in %.1fs", email_id, attempt, exc, delay
            )
            await asyncio.sleep(delay)
        except PERMANENT as exc:
            await emails.finish(
                sessions=sessions,
                email_id=email_id,
                attempt=attempt,
                status=emails.FAILED,
                error=str(exc),
            )
            return
        else:
            await emails.finish(
                sessions=sessions,
                email_id=email_id,
                attempt=attempt,
                status=emails.SENT,
                smtp_message_id=message_id,
            )
            return


async def _attempt(resources: EmailResources, request: EmailRequest) -> str:
    auth = resources.auth_service
    if auth is None:
        raise PermanentFailure("no auth service configured (NOTIFYHUB_AUTH_SERVICE_URL)")
    config = await _smtp_config(resources, request.tenant_id)
    try:
        template = await auth.email_template(request.tenant_id, request.template_key)
    except NotConfigured:
        raise PermanentFailure(f"email template {request.template_key!r} not found") from None
    rendered = render_email(template, request.context, subject_override=request.subject)
    message = build_message(config, to_email=request.to_email, rendered=rendered)
    return await resources.smtp.send(config, message)


async def _smtp_config(resources: EmailResources, tenant_id: str) -> SmtpConfig:
    assert resources.auth_service is not None
    try:
        return await resources.auth_service.smtp_config(tenant_id)
    except NotConfigured:
        fallback = resources.platform_smtp
        if fallback is None:
            raise PermanentFailure(
                "tenant has no SMTP settings and no platform SMTP is configured"
            ) from None
        return fallback


async def queue_email(
    *,
    broker: AsyncBroker,
    sessions: async_sessionmaker[AsyncSession],
    request: EmailRequest,
    email_id: str | None = None,
) -> str:
    """Queue an email (REST, event intake): kick the task, then record it as ``queued``.

    Kicked first: if the queue is down nothing is stored and the caller hears so; the
    record is then written with the same id, which the task would also create itself.
    """
    email_id = email_id or emails.new_email_id()
    await kick_email(broker=broker, email_id=email_id, request=request)
    await emails.record_email(sessions=sessions, email_id=email_id, request=request)
    return email_id


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
