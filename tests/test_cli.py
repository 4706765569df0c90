"""The CLI: minted tokens work, production refuses the development secret."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import jwt

from hub.realtime import CHAT_NAMESPACE
from hub.settings import DEFAULT_JWT_SECRET
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.processes import clean_environment, run_cli
from tests.harness.tokens import TEST_JWT_SECRET


def mint(*args: str) -> str:
    result = run_cli("token", *args, env=clean_environment(NOTIFYHUB_JWT_SECRET=TEST_JWT_SECRET))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_token_from_cli_is_accepted_by_the_hub(
    hub: RunningHub, sio_connect: SioConnect
) -> None:
    service = mint("--tenant", "t-cli", "--user", "crm", "--role", "service")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{hub.url}/api/broadcasts/",
            json={"title": "t", "body": "b"},
            headers={"Authorization": f"Bearer {service}"},
        ) as response,
    ):
        assert response.status == 202
    user = mint("--tenant", "t-cli", "--user", "alice", "--ttl", "60")
    claims = jwt.decode(user, TEST_JWT_SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["tenant_id"], claims["roles"]) == ("alice", "t-cli", [])
    assert claims["exp"] - claims["iat"] == 60
    client = await sio_connect(hub.url, CHAT_NAMESPACE, token=user)
    assert client.client.connected


def test_production_refuses_the_default_secret(tmp_path: Path) -> None:
    env = clean_environment(NOTIFYHUB_ENV="production")
    result = run_cli("serve", env=env, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "refuses the built-in development JWT secret" in result.stderr
    assert DEFAULT_JWT_SECRET not in result.stderr + result.stdout


def test_production_accepts_a_real_secret_for_tokens() -> None:
    env = clean_environment(NOTIFYHUB_ENV="production", NOTIFYHUB_JWT_SECRET="s" * 48)
    result = run_cli("token", "--tenant", "t", "--user", "u", env=env)
    assert result.returncode == 0, result.stderr


def test_bad_configuration_is_a_clear_error() -> None:
    env = clean_environment(NOTIFYHUB_JWT_ALGORITHMS="RS256")
    result = run_cli("token", "--tenant", "t", "--user", "u", env=env)
    assert result.returncode == 2
    assert "NOTIFYHUB_JWT_PUBLIC_KEY" in result.stderr
