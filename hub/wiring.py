"""The services of one process, built in one place: ``serve`` (``hub.app``) and
``notifyhub consume`` (``hub.consumer``) make notifications, emails, pushes and webhook
reports the same way."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from taskiq import AsyncBroker

from hub.delivery.bus import NotificationBus
from hub.rules import NotificationLimits
from hub.services.devices import DeviceService
from hub.services.emails import EmailService
from hub.services.notifications import NotificationService
from hub.services.preferences import PreferenceService
from hub.services.pushes import PushService
from hub.services.scheduled import ScheduleService
from hub.services.webhooks import WebhookService
from hub.settings import Settings
from hub.webhook_urls import check_public, check_shape_only
from tasks.email import TaskiqEmailQueue
from tasks.push import TaskiqPushQueue


@dataclass(frozen=True)
class Services:
    notifications: NotificationService
    emails: EmailService
    devices: DeviceService
    webhooks: WebhookService
    preferences: PreferenceService
    schedule: ScheduleService


def build_services(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    bus: NotificationBus,
    broker: AsyncBroker,
) -> Services:
    # A task whose record exists but never ran is swept after this long.
    sweep_after = settings.email_task_reclaim_seconds
    webhooks = WebhookService(
        sessions=sessions,
        check_url=check_shape_only if settings.webhooks_allow_private else check_public,
        max_per_tenant=settings.webhooks_max_per_tenant,
    )
    return Services(
        # Storing a notification also records its pushes (and its webhook reports).
        notifications=NotificationService(
            sessions=sessions,
            bus=bus,
            limits=NotificationLimits.from_settings(settings),
            pushes=PushService(
                queue=TaskiqPushQueue(broker), sessions=sessions, sweep_after_seconds=sweep_after
            ),
        ),
        emails=EmailService(
            queue=TaskiqEmailQueue(broker), sessions=sessions, sweep_after_seconds=sweep_after
        ),
        devices=DeviceService(sessions=sessions),
        webhooks=webhooks,
        preferences=PreferenceService(
            sessions=sessions, bus=bus, unsubscribe_key=settings.unsubscribe_key
        ),
        schedule=ScheduleService(sessions=sessions),
    )
