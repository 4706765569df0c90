"""Prometheus metrics of a hub process, served at ``/metrics``.

Labels never carry tenant or user ids (unbounded cardinality): namespaces, events, routes
(the route template, not the raw path), statuses, sources and outcomes only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

SOCKETS_CONNECTED = Gauge(
    "notifyhub_sockets_connected",
    "Socket.IO connections open on this process, by namespace.",
    ["namespace"],
)
EMITS = Counter(
    "notifyhub_emits_total",
    "Frames sent to clients by this process, by event.",
    ["event"],
)
HTTP_REQUESTS = Counter(
    "notifyhub_http_requests_total",
    "REST requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "notifyhub_http_request_duration_seconds",
    "REST request latency by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EVENTS = Counter(
    "notifyhub_events_total",
    "CRM events taken in, by source and outcome (applied, duplicate, dead_lettered).",
    ["source", "outcome"],
)
SCHEDULE_LATENESS = Histogram(
    "notifyhub_scheduled_lateness_seconds",
    "How long after its send_at a scheduled event was stored (and emitted).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
KAFKA_LAG = Gauge(
    "notifyhub_kafka_consumer_lag",
    "Messages between the committed position and the end of each assigned partition.",
    ["topic", "partition"],
)
EMAILS = Counter(
    "notifyhub_emails_total",
    "Email attempts' outcomes, by status (sent, retrying, failed).",
    ["status"],
)
PUSHES = Counter(
    "notifyhub_pushes_total",
    "Push attempts' outcomes, by channel (webpush, fcm, apns) and status (sent, retrying, "
    "failed, gone, skipped).",
    ["channel", "status"],
)
WEBHOOKS = Counter(
    "notifyhub_webhooks_total",
    "Webhook delivery attempts' outcomes, by status (sent, retrying, failed).",
    ["status"],
)
TASK_RETRIES = Counter(
    "notifyhub_task_retries_total",
    "Task attempts scheduled again after a transient failure, by task.",
    ["task"],
)


class PoolCollector(Collector):
    """``notifyhub_db_pool_connections_in_use``, read from the engine's pool at scrape time."""

    def __init__(self, checked_out: Callable[[], int]) -> None:
        self._checked_out = checked_out

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "notifyhub_db_pool_connections_in_use",
            "Database connections checked out of this process's pool.",
        )
        family.add_metric([], float(self._checked_out()))
        yield family


def register_pool(checked_out: Callable[[], int]) -> PoolCollector:
    collector = PoolCollector(checked_out)
    REGISTRY.register(collector)
    return collector


def unregister(collector: Collector) -> None:
    REGISTRY.unregister(collector)


SLOW_CONSUMERS = Counter(
    "notifyhub_slow_consumer_disconnects_total",
    "Connections dropped because their unsent frames passed the per-socket buffer limit.",
    ["transport"],
)
PROTOCOL_ERRORS = Counter(
    "notifyhub_socket_protocol_errors_total",
    "Malformed or forbidden frames received from clients, by kind.",
    ["kind"],
)
CATCH_UPS = Counter(
    "notifyhub_delivery_catch_ups_total",
    "Subscribers sent what they missed from the database, by reason (connect, gap, "
    "resubscribed: the bus came back, lagging: a stored notification never came by the bus).",
    ["reason"],
)
PURGED_ROWS = Counter(
    "notifyhub_purged_rows_total",
    "Rows deleted by the retention purge, by kind (notifications_expired, "
    "notifications_retention, messages).",
    ["kind"],
)
