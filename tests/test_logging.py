"""Logs: JSON lines with request id, tenant and user; never tokens, passwords or bodies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from hub.realtime import CHAT_NAMESPACE
from tests.harness.api import ApiClient
from tests.harness.hub import SettingsFactory, SioConnect, settings_environment
from tests.harness.ports import free_port, wait_for_port_async
from tests.harness.tokens import hs256_token


async def test_json_logs_carry_context_and_no_secrets(
    hub_settings: SettingsFactory, sio_connect: SioConnect, tenant: str, tmp_path: Path
) -> None:
    port = free_port()
    settings = hub_settings(
        log_format="json", log_level="DEBUG", smtp_password="smtp-secret-password-xyz"
    )
    env = {**os.environ, **settings_environment(settings)}
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "hub", "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=sink,
        )
        try:
            await wait_for_port_async(port, timeout=20)
            url = f"http://127.0.0.1:{port}"
            alice = ApiClient.for_user(url, tenant, "alice")
            secret_body = "top-secret-message-body-4711"
            status, _ = await alice.post(
                "/api/messages/send/", {"to_user_id": "bob", "body": secret_body}
            )
            assert status == 201
            # A failing request logs a warning inside the request context.
            chat = await sio_connect(
                url, CHAT_NAMESPACE, token=hs256_token(tenant=tenant, user="bob")
            )
            await chat.call(
                "message:send", {"to_user_id": "alice", "body": secret_body + "-socket"}
            )
            await chat.client.disconnect()
            await asyncio.sleep(0.3)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 15)
    text = log_file.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert records and all(
        {"ts", "level", "logger", "request_id", "message"} <= set(r) for r in records
    )
    requests = [
        r for r in records if r["logger"] == "hub.http" and "/api/messages/send/" in r["message"]
    ]
    assert requests, "no request log line"
    assert requests[0]["request_id"] != "-"
    assert requests[0]["tenant_id"] == tenant and requests[0]["user_id"] == "alice"
    assert alice.token not in text
    assert "smtp-secret-password-xyz" not in text
    assert "top-secret-message-body-4711" not in text
