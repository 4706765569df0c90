"""Every piece of application and request state, as typed aiohttp keys, in one place."""

from __future__ import annotations

import aiohttp
import socketio
from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.migrate import SchemaCheck
from hub.auth import Principal, TokenVerifier
from hub.delivery.bus import ChatBus, DisconnectBus, NotificationBus
from hub.delivery.chat import ChatDelivery
from hub.delivery.notifications import NotificationDelivery
from hub.intake.apply import EventApplier
from hub.intake.runtime import EventSource
from hub.intake.schedule import Scheduler
from hub.presence import PresenceTracker
from hub.realtime import Realtime
from hub.services.chat import ChatService
from hub.services.data_rights import DataRightsService
from hub.services.devices import DeviceService
from hub.services.emails import EmailService
from hub.services.notifications import NotificationService
from hub.services.preferences import PreferenceService
from hub.services.presence import PresenceService
from hub.services.scheduled import ScheduleService
from hub.services.tenants import TenantSettingsService
from hub.services.typing_indicators import TypingRelay
from hub.services.webhooks import WebhookService
from hub.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
HTTP_CLIENT = web.AppKey("http_client", aiohttp.ClientSession)
VERIFIER = web.AppKey("verifier", TokenVerifier)
DB_ENGINE = web.AppKey("db_engine", AsyncEngine)
DB_SESSIONS = web.AppKey("db_sessions", async_sessionmaker[AsyncSession])
SCHEMA_CHECK = web.AppKey("schema_check", SchemaCheck)
REDIS = web.AppKey("redis", Redis)
SOCKETIO = web.AppKey("socketio", socketio.AsyncServer)
REALTIME = web.AppKey("realtime", Realtime)
NOTIFICATION_BUS = web.AppKey("notification_bus", NotificationBus)
# This node's records in the route maps (hub.delivery.routes): its /notifications
# connections, and its /chat sockets (the chat presence tracker).
NOTIFICATION_ROUTES = web.AppKey("notification_routes", PresenceTracker)
CHAT_ROUTES = web.AppKey("chat_routes", PresenceTracker)
NOTIFICATION_DELIVERY = web.AppKey("notification_delivery", NotificationDelivery)
# The same bus as NOTIFICATION_BUS, seen by the chat service.
CHAT_BUS = web.AppKey("chat_bus", ChatBus)
CHAT_DELIVERY = web.AppKey("chat_delivery", ChatDelivery)
# The same bus again, seen by the data rights service (an erased user's sockets are closed).
DISCONNECT_BUS = web.AppKey("disconnect_bus", DisconnectBus)
# The services, built once at startup: every entry point (REST, sockets, intake) calls these.
NOTIFICATIONS = web.AppKey("notifications", NotificationService)
CHAT = web.AppKey("chat", ChatService)
EMAILS = web.AppKey("emails", EmailService)
DEVICES = web.AppKey("devices", DeviceService)
WEBHOOKS = web.AppKey("webhooks", WebhookService)
TENANT_SETTINGS = web.AppKey("tenant_settings", TenantSettingsService)
PREFERENCES = web.AppKey("preferences", PreferenceService)
SCHEDULE = web.AppKey("schedule", ScheduleService)
DATA_RIGHTS = web.AppKey("data_rights", DataRightsService)
TYPING = web.AppKey("typing", TypingRelay)
PRESENCE = web.AppKey("presence", PresenceService)
# Typed by what /readyz asks of them, so that this module (which every adapter imports)
# does not load the Kafka and AMQP clients.
KAFKA_INTAKE = web.AppKey("kafka_intake", EventSource)
RABBITMQ_INTAKE = web.AppKey("rabbitmq_intake", EventSource)
# POST /api/events/ applies its events with this, like the Kafka and RabbitMQ sources.
REST_EVENTS = web.AppKey("rest_events", EventApplier)
# The scheduler of this process (the embedded profile only; workers run their own).
SCHEDULER = web.AppKey("scheduler", Scheduler)
# Open legacy WebSockets, closed at once when the node shuts down.
LEGACY_SOCKETS = web.AppKey("legacy_sockets", set[web.WebSocketResponse])

PRINCIPAL = web.RequestKey("principal", Principal)
