"""Web Push (RFC 8030) with aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292),
by ``pywebpush`` / ``py-vapid`` / ``http-ece`` over the worker's aiohttp session."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import aiohttp
import orjson
from py_vapid import Vapid, VapidException
from pywebpush import WebPusher, WebPushException

from hub.services.pushes import PushClaim
from tasks.push_senders import PushResult, collapse_id, result_for_status

# A push service keeps an undelivered message this long for a device that is offline.
MESSAGE_TTL_SECONDS = 24 * 3600
# VAPID tokens are valid for at most 24 h (RFC 8292); we sign for 12 and re-sign at 11.
TOKEN_SECONDS = 12 * 3600
TOKEN_REUSE_SECONDS = 11 * 3600


class WebPushSender:
    def __init__(
        self, *, http: aiohttp.ClientSession, private_key: str, subject: str, timeout: float
    ) -> None:
        self.http = http
        self.vapid = Vapid.from_raw(private_key.strip().encode())
        self.subject = subject
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        # Signing is ~0.1 ms of ECDSA: done once per push service origin and reused.
        self._tokens: dict[str, tuple[float, dict[str, str]]] = {}

    def _authorization(self, endpoint: str) -> dict[str, str]:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._tokens.get(audience)
        if cached is not None and now - cached[0] < TOKEN_REUSE_SECONDS:
            return dict(cached[1])
        headers: dict[str, str] = self.vapid.sign(
            {"aud": audience, "sub": self.subject, "exp": int(now + TOKEN_SECONDS)}
        )
        self._tokens[audience] = (now, headers)
        return dict(headers)

    async def send(self, claim: PushClaim) -> PushResult:
        subscription = {"endpoint": claim.token, "keys": claim.keys}
        try:
            pusher = WebPusher(subscription, aiohttp_session=self.http)
            response = await pusher.send_async(
                data=orjson.dumps(claim.payload),
                headers={**self._authorization(claim.token), "Topic": collapse_id(claim)},
                ttl=MESSAGE_TTL_SECONDS,
                content_encoding="aes128gcm",
                timeout=self.timeout,
            )
        except VapidException as exc:
            return PushResult("failed", f"VAPID signing refused: {exc}")
        except WebPushException as exc:
            # The subscription's keys cannot encrypt (registration checks them; a device
            # stored before that check, or tampered with).
            return PushResult("failed", f"bad subscription: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return PushResult("retry", f"push service unreachable: {exc!r}")
        if isinstance(response, str):  # only with curl=True, which is never asked
            raise TypeError("pywebpush answered a curl command")
        body = await response.text()
        response.release()
        return result_for_status(response.status, body, response.headers.get("Retry-After"))

    async def close(self) -> None:
        return None  # the session is the worker's
