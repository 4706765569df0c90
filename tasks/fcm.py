"""FCM HTTP v1: ``POST {NOTIFYHUB_FCM_URL}/v1/projects/{project}/messages:send`` with an
OAuth 2 token of the service account (``google-auth``), cached until it expires."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import google.auth.transport.requests
from google.auth.exceptions import GoogleAuthError
from google.oauth2 import service_account

from hub.services.pushes import PushClaim
from tasks.push_senders import PushResult, collapse_id, result_for_status

SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]


def message_for(claim: PushClaim) -> dict[str, Any]:
    """The FCM message: a visible notification, and the payload as string data (FCM data
    values must be strings)."""
    payload = claim.payload
    return {
        "message": {
            "token": claim.token,
            "notification": {"title": payload.get("title", ""), "body": payload.get("body", "")},
            "data": {key: "" if value is None else str(value) for key, value in payload.items()},
            "android": {"collapse_key": collapse_id(claim)},
            "apns": {"headers": {"apns-collapse-id": collapse_id(claim)}},
            "webpush": {"headers": {"Topic": collapse_id(claim)}},
        }
    }


class FcmSender:
    def __init__(
        self, *, http: aiohttp.ClientSession, credentials_file: str, url: str, timeout: float
    ) -> None:
        info = json.loads(Path(credentials_file).read_text())
        self.project_id: str = info["project_id"]
        # google-auth's constructor carries no annotations.
        self.credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=SCOPES
        )
        self.endpoint = f"{url.rstrip('/')}/v1/projects/{self.project_id}/messages:send"
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._refreshing = asyncio.Lock()

    async def _token(self) -> str:
        async with self._refreshing:
            if not self.credentials.valid:
                # google-auth refreshes synchronously: in a thread, once for all senders.
                await asyncio.to_thread(
                    self.credentials.refresh, google.auth.transport.requests.Request()
                )
            return str(self.credentials.token)

    async def send(self, claim: PushClaim) -> PushResult:
        try:
            token = await self._token()
        except (GoogleAuthError, OSError) as exc:
            return PushResult("retry", f"FCM OAuth token not obtained: {exc}")
        try:
            async with self.http.post(
                self.endpoint,
                json=message_for(claim),
                headers={"Authorization": f"Bearer {token}"},
                timeout=self.timeout,
            ) as response:
                body = await response.text()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return PushResult("retry", f"FCM unreachable: {exc!r}")
        if status == 401:
            # The token was refused (revoked, clock skew): get a new one next time.
            self.credentials.token = None
            return PushResult("retry", f"HTTP 401: {body[:300]}")
        if status == 400 and "UNREGISTERED" in body:
            return PushResult("gone", f"HTTP 400: {body[:300]}")
        return result_for_status(status, body, retry_after)

    async def close(self) -> None:
        return None  # the session is the worker's
