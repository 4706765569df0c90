"""An aiosmtpd server on loopback that keeps every message it receives."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.harness.ports import free_port


@dataclass
class SmtpSink:
    """Messages received, plus knobs to make the server answer with an error."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    # Replies to give to the next DATA commands instead of accepting, e.g. "451 try later".
    scripted_replies: list[str] = field(default_factory=list)
    # A slow server: seconds between the end of a message's data and the reply. The message
    # is taken only with the reply; a client that disconnects before it sent nothing (as
    # aiosmtpd cancels the handler when the connection is lost).
    delay_seconds: float = 0.0
    # While True, messages are held before the reply (a server that stopped answering).
    paused: bool = False
    # Messages between the end of their data and the reply, now and at most at once.
    in_data: int = 0
    max_in_data: int = 0
    # time.monotonic() of each message in ``messages``, when it was taken.
    received_at: list[float] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.scripted_replies:
            return self.scripted_replies.pop(0)
        self.in_data += 1
        self.max_in_data = max(self.max_in_data, self.in_data)
        try:
            if self.delay_seconds:
                await asyncio.sleep(self.delay_seconds)
            while self.paused:
                await asyncio.sleep(0.01)
        finally:
            self.in_data -= 1
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        self.received_at.append(time.monotonic())
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        """The ``Message-ID`` of every message received, repeats included."""
        return [str(message["Message-ID"]) for message in self.messages]


def start_smtp_sink(sink: SmtpSink | None = None) -> tuple[SmtpSink, Controller]:
    """Serve ``sink`` (a new one on a free port if None), e.g. again after a stop."""
    if sink is None:
        sink = SmtpSink(host="127.0.0.1", port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port)
    controller.start()
    return sink, controller


def smtp_config(sink: SmtpSink, sender: str, name: str) -> dict[str, Any]:
    """What the stub auth service answers for a tenant whose SMTP server is ``sink``."""
    return {
        "host": sink.host,
        "port": sink.port,
        "username": None,
        "password": None,
        "use_tls": False,
        "start_tls": False,
        "from_email": sender,
        "from_name": name,
    }


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    sink, controller = start_smtp_sink()
    try:
        yield sink
    finally:
        controller.stop()
