"""The harness itself: each real service answers and each stand-in behaves."""

from __future__ import annotations

from email.message import EmailMessage

import aiohttp
import aiosmtplib
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import RunningHub
from tests.harness.services import _asyncpg_dsn
from tests.harness.smtp import SmtpSink


async def test_postgres_database_is_migrated(postgres_url: str) -> None:
    connection = await asyncpg.connect(_asyncpg_dsn(postgres_url))
    try:
        assert await connection.fetchval("SELECT version_num FROM alembic_version")
        for table in ("notifications", "conversations", "messages", "emails", "processed_events"):
            assert await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table), table
    finally:
        await connection.close()


async def test_kafka_broker_round_trip(kafka_bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("harness.check", b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        "harness.check",
        bootstrap_servers=kafka_bootstrap,
        group_id="harness",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        values = [record.value for records in batch.values() for record in records]
        assert values == [b"hello"]
    finally:
        await consumer.stop()


async def test_smtp_sink_receives(smtp_server: SmtpSink) -> None:
    message = EmailMessage()
    message["From"] = "a@example.com"
    message["To"] = "b@example.com"
    message["Subject"] = "hi"
    message.set_content("body")
    await aiosmtplib.send(message, hostname=smtp_server.host, port=smtp_server.port)
    assert [m["Subject"] for m in smtp_server.messages] == ["hi"]


async def test_auth_service_stub_serves_and_fails_on_demand(auth_service: AuthServiceStub) -> None:
    auth_service.smtp_configs["t1"] = {"host": "127.0.0.1", "port": 25}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{auth_service.url}/api/tenants/t1/smtp-config/") as response:
            assert response.status == 200
            assert (await response.json())["port"] == 25
        async with http.get(f"{auth_service.url}/api/tenants/t2/smtp-config/") as response:
            assert response.status == 404
        auth_service.failing_status = 503
        async with http.get(f"{auth_service.url}/api/tenants/t1/smtp-config/") as response:
            assert response.status == 503


async def test_hub_serves_on_a_real_port(hub: RunningHub) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{hub.url}/healthz") as response:
        assert response.status == 200
