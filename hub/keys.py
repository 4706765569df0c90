"""Every piece of application and request state, as typed aiohttp keys, in one place."""

from __future__ import annotations

import aiohttp
import socketio
from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from db.migrate import SchemaCheck
from hub.auth import Principal, TokenVerifier
from hub.delivery.bus import NotificationBus
from hub.delivery.notifications import NotificationDelivery
from hub.intake.apply import EventApplier
from hub.intake.runtime import EventSource
from hub.realtime import Realtime
from hub.rules import NotificationLimits
from hub.services.chat import ChatLimits
from hub.services.emails import EmailQueue
from hub.services.ratelimit import RateLimiter
from hub.services.typing_indicators import TypingRelay
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
NOTIFICATION_DELIVERY = web.AppKey("notification_delivery", NotificationDelivery)
NOTIFICATION_LIMITS = web.AppKey("notification_limits", NotificationLimits)
CHAT_LIMITS = web.AppKey("chat_limits", ChatLimits)
SEND_LIMITER = web.AppKey("send_limiter", RateLimiter)
TYPING = web.AppKey("typing", TypingRelay)
# Typed by what /readyz asks of them, so that this module (which every adapter imports)
# does not load the Kafka and AMQP clients.
KAFKA_INTAKE = web.AppKey("kafka_intake", EventSource)
RABBITMQ_INTAKE = web.AppKey("rabbitmq_intake", EventSource)
# Email work goes through this interface (tasks.email implements it with Taskiq).
EMAIL_QUEUE = web.AppKey("email_queue", EmailQueue)
# POST /api/events/ applies its events with this, like the Kafka and RabbitMQ sources.
REST_EVENTS = web.AppKey("rest_events", EventApplier)
# Open legacy WebSockets, closed at once when the node shuts down.
LEGACY_SOCKETS = web.AppKey("legacy_sockets", set[web.WebSocketResponse])

PRINCIPAL = web.RequestKey("principal", Principal)
