"""A tiny REST client for tests: one call, status and JSON back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.harness.tokens import hs256_token


@dataclass
class ApiClient:
    base_url: str
    token: str

    @classmethod
    def for_user(cls, base_url: str, tenant: str, user: str, **kwargs: Any) -> ApiClient:
        return cls(base_url, hs256_token(tenant=tenant, user=user, **kwargs))

    @classmethod
    def for_service(cls, base_url: str, tenant: str) -> ApiClient:
        return cls(base_url, hs256_token(tenant=tenant, user="crm-module", roles=["service"]))

    async def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method,
                f"{self.base_url}{path}",
                json=json,
                params=params,
                headers={"Authorization": f"Bearer {self.token}"},
            ) as response,
        ):
            if response.status == 204:
                return response.status, None
            return response.status, await response.json()

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=body)

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self.request("DELETE", path)

    async def notify(self, user_ids: list[str], title: str = "Hello", **fields: Any) -> list[str]:
        """Create notifications (service token); returns their ids."""
        status, body = await self.post(
            "/api/notifications/", {"user_ids": user_ids, "title": title, "body": "b", **fields}
        )
        assert status == 201, body
        ids: list[str] = body["ids"]
        return ids
