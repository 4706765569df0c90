"""``/metrics``: each family exists and moves when the real action happens."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub, SettingsFactory, SioConnect
from tests.harness.kafka import KafkaTopics
from tests.harness.ports import eventually
from tests.harness.smtp import SmtpSink
from tests.harness.tokens import hs256_token

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(hub: RunningHub) -> Samples:
    async with aiohttp.ClientSession() as http, http.get(f"{hub.url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_real_actions(
    hub: RunningHub, tenant: str, sio_connect: SioConnect
) -> None:
    before = await scrape(hub)
    await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="u1"))
    await sio_connect(hub.url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="u1"))
    live = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="u2")
    )
    service = ApiClient.for_service(hub.url, tenant)
    await service.notify(["u2"])
    await live.wait_for("notification:new")
    event = {
        "event_id": "m-1",
        "tenant_id": tenant,
        "type": "t",
        "recipients": [{"user_id": "u3"}],
        "notification": {"title": "x"},
    }
    await service.post("/api/events/", event)
    await service.post("/api/events/", event)
    await ApiClient.for_user(hub.url, tenant, "u1").get("/api/conversations/999/messages/")
    after = await scrape(hub)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("notifyhub_sockets_connected", namespace="/notifications") == 2
    assert delta("notifyhub_sockets_connected", namespace="/chat") == 1
    assert delta("notifyhub_emits_total", event="notification:new") >= 1
    assert delta("notifyhub_events_total", source="rest", outcome="applied") == 1
    assert delta("notifyhub_events_total", source="rest", outcome="duplicate") == 1
    assert (
        delta(
            "notifyhub_http_requests_total",
            route="/api/notifications/",
            method="POST",
            status="201",
        )
        == 1
    )
    # Routes are templates, never raw ids.
    assert (
        delta(
            "notifyhub_http_requests_total",
            route="/api/conversations/{conversation_id}/messages/",
            method="GET",
            status="404",
        )
        == 1
    )
    assert (
        delta("notifyhub_http_request_duration_seconds_count", route="/api/events/", method="POST")
        == 2
    )
    assert ("notifyhub_db_pool_connections_in_use", ()) in after
    assert not any(tenant in str(labels) for (_, labels) in after), "tenant ids in labels"


async def test_dead_letters_and_consumer_lag_are_exposed(
    hub_factory: Callable[..., Any], hub_settings: SettingsFactory, kafka: KafkaTopics
) -> None:
    hub: RunningHub = await hub_factory(kafka.settings(hub_settings))
    before = await scrape(hub)
    await kafka.produce([b"not json", orjson.dumps({"nope": 1})])

    async def dead_lettered() -> bool:
        now = await scrape(hub)
        return (
            value(now, "notifyhub_events_total", source="kafka", outcome="dead_lettered")
            - value(before, "notifyhub_events_total", source="kafka", outcome="dead_lettered")
            == 2
        )

    await eventually(dead_lettered, timeout=20, interval=0.2)
    after = await scrape(hub)
    lags = [
        v
        for (name, labels), v in after.items()
        if name == "notifyhub_kafka_consumer_lag" and ("topic", kafka.topic) in labels
    ]
    assert lags and all(v == 0 for v in lags)


async def test_email_outcomes_and_retries_are_counted(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    auth_service: AuthServiceStub,
    smtp_server: SmtpSink,
    tmp_path: Path,
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    auth_service.templates[(tenant, "k")] = {"subject": "s", "html": "<p>hi</p>"}
    hub: RunningHub = await hub_factory(
        hub_settings(
            redis_url=None,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            auto_migrate=True,
            auth_service_url=auth_service.url,
            smtp_host=smtp_server.host,
            smtp_port=smtp_server.port,
            smtp_start_tls=False,
            smtp_from_email="platform@hub.example",
            email_retry_base_seconds=0.1,
        )
    )
    before = await scrape(hub)
    smtp_server.scripted_replies.append("451 4.3.0 later")
    status, body = await ApiClient.for_service(hub.url, tenant).post(
        "/api/emails/send/", {"to_email": "a@example.com", "template_key": "k"}
    )
    assert status == 202, body
    await eventually(lambda: len(smtp_server.messages) == 1, timeout=10)
    after = await scrape(hub)
    assert (
        value(after, "notifyhub_emails_total", status="sent")
        - value(before, "notifyhub_emails_total", status="sent")
        == 1
    )
    assert (
        value(after, "notifyhub_emails_total", status="retrying")
        - value(before, "notifyhub_emails_total", status="retrying")
        == 1
    )
    assert (
        value(after, "notifyhub_task_retries_total", task="notifyhub.send_notification_email")
        - value(before, "notifyhub_task_retries_total", task="notifyhub.send_notification_email")
        == 1
    )
