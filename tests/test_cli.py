"""The CLI: minted tokens work, production refuses the development secret, and every
configuration or startup mistake is one actionable line on stderr with exit code 2."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from hub.realtime import CHAT_NAMESPACE
from hub.settings import DEFAULT_JWT_SECRET
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.ports import free_port
from tests.harness.processes import assert_startup_error, clean_environment, run_cli
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


PRODUCTION_SECRET = "p" * 48


def test_invalid_settings_are_one_line_naming_the_variable_without_its_value() -> None:
    env = clean_environment(NOTIFYHUB_PORT="not-a-port", NOTIFYHUB_JWT_SECRET="hunter2-secret")
    line = assert_startup_error(run_cli("token", "--tenant", "t", "--user", "u", env=env))
    assert "NOTIFYHUB_PORT" in line
    assert "not-a-port" not in line


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_a_database_url_without_asyncpg_says_which_url_to_write(
    tmp_path: Path, scheme: str
) -> None:
    url = f"{scheme}://notifyhub:s3cret-pw@127.0.0.1:5432/notifyhub"
    env = clean_environment(NOTIFYHUB_DATABASE_URL=url)
    for command in ("migrate", "serve"):
        line = assert_startup_error(
            run_cli(command, env=env, cwd=tmp_path),
            "NOTIFYHUB_DATABASE_URL",
            "postgresql+asyncpg://",
        )
        assert "s3cret-pw" not in line
    assert not (tmp_path / "notifyhub.db").exists()


def test_an_unsupported_database_is_refused() -> None:
    env = clean_environment(NOTIFYHUB_DATABASE_URL="mysql://u:p@127.0.0.1/db")
    assert_startup_error(
        run_cli("migrate", env=env), "mysql:// is not supported", "postgresql+asyncpg://"
    )


@pytest.mark.parametrize("command", ["serve", "migrate", "worker", "consume"])
def test_production_refuses_sqlite_for_commands_that_use_the_database(
    tmp_path: Path, command: str
) -> None:
    env = clean_environment(
        NOTIFYHUB_ENV="production",
        NOTIFYHUB_JWT_SECRET=PRODUCTION_SECRET,
        NOTIFYHUB_REDIS_URL="redis://127.0.0.1:6379/13",
        NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092",
    )
    assert_startup_error(
        run_cli(command, env=env, cwd=tmp_path),
        "production refuses SQLite",
        "NOTIFYHUB_DATABASE_URL",
    )
    assert not (tmp_path / "notifyhub.db").exists(), "nothing was created"


def test_serve_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli("serve", "--port", str(port), env=clean_environment(), cwd=tmp_path)
    line = assert_startup_error(result, f"port {port} is in use", "NOTIFYHUB_PORT")
    assert "serving" not in result.stderr, "it never claimed to serve"
    assert time.monotonic() - started < 20, line


def test_serve_on_an_address_not_of_this_machine_says_so(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never assigned to a real interface.
    result = run_cli(
        "serve",
        "--host",
        "192.0.2.1",
        "--port",
        str(free_port()),
        env=clean_environment(),
        cwd=tmp_path,
    )
    assert_startup_error(result, "192.0.2.1 is not an address of this machine", "NOTIFYHUB_HOST")


def test_serve_that_cannot_create_its_sqlite_file_says_so(tmp_path: Path) -> None:
    env = clean_environment(NOTIFYHUB_DATABASE_URL="sqlite+aiosqlite:////proc/notifyhub.db")
    result = run_cli("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert_startup_error(result, "/proc/notifyhub.db")


@pytest.mark.parametrize("command", ["worker", "consume", "serve"])
def test_a_wrong_redis_port_is_one_line(command: str, tmp_path: Path) -> None:
    port = free_port()
    env = clean_environment(
        NOTIFYHUB_REDIS_URL=f"redis://:r3dis-pw@127.0.0.1:{port}/0",
        NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        NOTIFYHUB_PORT=str(free_port()),
    )
    line = assert_startup_error(
        run_cli(command, env=env, cwd=tmp_path, timeout=30),
        f"Redis at 127.0.0.1:{port}/0 does not answer",
        "NOTIFYHUB_REDIS_URL",
    )
    assert "r3dis-pw" not in line


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        ("worker", "NOTIFYHUB_REDIS_URL"),
        ("consume", "NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_worker_and_consumer_name_the_setting_they_need(command: str, variable: str) -> None:
    assert_startup_error(run_cli(command, env=clean_environment(), timeout=30), variable)


@pytest.mark.parametrize(
    ("variable", "value", "phrase"),
    [
        ("NOTIFYHUB_REDIS_URL", "localhost:6379", "redis://"),
        ("NOTIFYHUB_LOG_LEVEL", "verbose", "DEBUG, INFO"),
    ],
)
def test_malformed_settings_are_one_line(variable: str, value: str, phrase: str) -> None:
    env = clean_environment(**{variable: value})
    assert_startup_error(run_cli("worker", env=env), variable, phrase)
