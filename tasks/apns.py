"""APNs over HTTP/2 (``httpx``) with a token-based provider key (.p8, ES256 JWT signed
with ``pyjwt``, reused for 50 minutes: Apple refuses a new one more often than every 20
and an old one after 60)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from hub.services.pushes import PushClaim
from tasks.push_senders import PushResult, collapse_id, result_for_status

TOKEN_REUSE_SECONDS = 50 * 60
# Reasons (in a 400 or 410 answer) that mean the token will never work again.
GONE_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"})
# Reasons (403) that mean our provider token must be signed again.
STALE_TOKEN_REASONS = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})


def notification_for(claim: PushClaim) -> dict[str, Any]:
    payload = claim.payload
    return {
        "aps": {"alert": {"title": payload.get("title", ""), "body": payload.get("body", "")}},
        "notification": payload,
    }


class ApnsSender:
    def __init__(
        self,
        *,
        key_file: str,
        key_id: str,
        team_id: str,
        topic: str,
        url: str,
        timeout: float,
    ) -> None:
        self.key = Path(key_file).read_text()
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.url = url.rstrip("/")
        # HTTP/2 only (APNs speaks nothing else): over TLS it is negotiated by ALPN, over a
        # plain http:// URL (a local stand-in) it is spoken with prior knowledge.
        self.client = httpx.AsyncClient(http1=False, http2=True, timeout=timeout)
        self._token: tuple[float, str] | None = None

    def _provider_token(self) -> str:
        now = time.time()
        if self._token is None or now - self._token[0] > TOKEN_REUSE_SECONDS:
            signed = jwt.encode(
                {"iss": self.team_id, "iat": int(now)},
                self.key,
                algorithm="ES256",
                headers={"kid": self.key_id},
            )
            self._token = (now, signed)
        return self._token[1]

    async def send(self, claim: PushClaim) -> PushResult:
        headers = {
            "authorization": f"bearer {self._provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "apns-collapse-id": collapse_id(claim),
            "apns-expiration": str(int(time.time()) + 24 * 3600),
        }
        try:
            response = await self.client.post(
                f"{self.url}/3/device/{claim.token}", json=notification_for(claim), headers=headers
            )
        except httpx.HTTPError as exc:
            return PushResult("retry", f"APNs unreachable: {exc!r}")
        body = response.text
        reason = _reason(response)
        if reason in GONE_REASONS:
            return PushResult("gone", f"HTTP {response.status_code}: {reason}")
        if response.status_code == 403 and reason in STALE_TOKEN_REASONS:
            self._token = None
            return PushResult("retry", f"HTTP 403: {reason}")
        return result_for_status(
            response.status_code, body, response.headers.get("retry-after"), gone=frozenset({410})
        )

    async def close(self) -> None:
        await self.client.aclose()


def _reason(response: httpx.Response) -> str | None:
    try:
        document = response.json()
    except ValueError:
        return None
    reason = document.get("reason") if isinstance(document, dict) else None
    return reason if isinstance(reason, str) else None
