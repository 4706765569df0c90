"""Local stand-ins for push services: a Web Push service and FCM (aiohttp), APNs (HTTP/2
with prior knowledge, on the ``h2`` protocol library), and the keys a browser, a Google
service account and an Apple developer account would hold."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece  # type: ignore[import-untyped]
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, RequestReceived, StreamEnded
from multidict import CIMultiDict


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class BrowserSubscription:
    """What a browser's ``pushManager.subscribe`` makes: a key pair and an auth secret;
    only the browser can decrypt what is pushed to it."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def as_json(self) -> dict[str, Any]:
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> Any:
        plain = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


@dataclass
class Received:
    path: str
    headers: CIMultiDict[str]  # HTTP header names are case-insensitive
    body: bytes


@dataclass
class FakePushServices:
    """One aiohttp server: ``/wp/{name}`` is a Web Push endpoint, ``/token`` Google's OAuth
    token endpoint, ``/v1/projects/{project}/messages:send`` FCM. ``answers[name]`` lists
    the statuses to answer next (then 201/200); ``hold`` keeps requests open until set."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    hold: asyncio.Event | None = None
    fcm_tokens_issued: int = 0
    service_account_public_key: rsa.RSAPublicKey | None = None

    def for_path(self, fragment: str) -> list[Received]:
        return [r for r in self.received if fragment in r.path]

    def _answer(self, name: str, default: int) -> int:
        queued = self.answers.get(name)
        return queued.pop(0) if queued else default

    async def webpush(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, CIMultiDict(request.headers), body))
        if self.hold is not None:
            await self.hold.wait()
        return web.Response(status=self._answer(request.match_info["name"], 201))

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assertion = str(form.get("assertion", ""))
        if self.service_account_public_key is None:
            return web.json_response({"error": "no key"}, status=500)
        try:
            jwt.decode(
                assertion,
                self.service_account_public_key,
                algorithms=["RS256"],
                # google-auth always names Google's endpoint, wherever token_uri points.
                audience="https://oauth2.googleapis.com/token",
            )
        except jwt.PyJWTError as exc:
            return web.json_response({"error": "invalid_grant", "detail": str(exc)}, status=400)
        self.fcm_tokens_issued += 1
        return web.json_response(
            {
                "access_token": f"ya29.test-{self.fcm_tokens_issued}",
                "expires_in": 3600,
                "token_type": "Bearer",
            }
        )

    async def fcm(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, CIMultiDict(request.headers), body))
        if not request.headers.get("Authorization", "").startswith("Bearer ya29.test-"):
            return web.json_response({"error": {"status": "UNAUTHENTICATED"}}, status=401)
        token = json.loads(body)["message"]["token"]
        status = self._answer(token, 200)
        if status == 404:
            return web.json_response(
                {"error": {"status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}},
                status=404,
            )
        return web.json_response({"name": "projects/p/messages/1"}, status=status)


@pytest.fixture
async def push_services() -> AsyncIterator[FakePushServices]:
    services = FakePushServices()
    app = web.Application()
    app.router.add_post("/wp/{name}", services.webpush)
    app.router.add_post("/token", services.token)
    app.router.add_post("/v1/projects/{project}/messages:send", services.fcm)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    services.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield services
    finally:
        if services.hold is not None:
            services.hold.set()
        await runner.cleanup()


def service_account_file(directory: Path, services: FakePushServices) -> Path:
    """A Google service-account JSON whose token endpoint is the fake's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    services.service_account_public_key = key.public_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = directory / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "notifyhub-test",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "hub@notifyhub-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{services.url}/token",
            }
        )
    )
    return path


def apns_key_file(directory: Path) -> tuple[Path, ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / "AuthKey_TEST.p8"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path, key.public_key()


Handler = Callable[[dict[str, str], bytes], tuple[int, dict[str, Any] | None]]


@dataclass
class FakeApns:
    """APNs over HTTP/2 (cleartext, prior knowledge): every request is recorded and
    answered by ``handler(headers, body) -> (status, json body or None)``."""

    handler: Handler
    url: str = ""
    received: list[Received] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = H2Connection(config=H2Configuration(client_side=False))
        connection.initiate_connection()
        writer.write(connection.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, RequestReceived):
                        headers = {
                            (k.decode() if isinstance(k, bytes) else k): (
                                v.decode() if isinstance(v, bytes) else v
                            )
                            for k, v in event.headers
                        }
                        streams[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        connection.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        self.received.append(
                            Received(headers[":path"], CIMultiDict(headers), bytes(body))
                        )
                        status, answer = self.handler(headers, bytes(body))
                        payload = json.dumps(answer).encode() if answer is not None else b""
                        connection.send_headers(
                            event.stream_id,
                            [(":status", str(status)), ("content-length", str(len(payload)))],
                            end_stream=not payload,
                        )
                        if payload:
                            connection.send_data(event.stream_id, payload, end_stream=True)
                writer.write(connection.data_to_send())
                await writer.drain()
        finally:
            writer.close()
