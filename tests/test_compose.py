"""Static checks of the container setup against the code it configures (no Docker needed).

``docker-compose.yml``, ``.env.example`` and the ``Dockerfile`` name CLI subcommands and
``NOTIFYHUB_*`` settings as plain strings; nothing else would notice a renamed subcommand or
a typo'd variable (pydantic-settings silently ignores unknown environment variables).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.cli import build_parser
from hub.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"

IMAGE_NAME = "notifyhub"
HUB_SERVICE = "hub"
ROOT_USERS = frozenset({"root", "0"})

# Any NOTIFYHUB_ name, whatever its case, so a lower-case typo is caught too.
NOTIFYHUB_NAME = re.compile(r"\bNOTIFYHUB_\w+")
# Compose interpolation: ${NAME}, ${NAME:-default}, ${NAME:?error}, $NAME ($$ is a literal $).
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# .env.example lines: NAME=value, or "# NAME=value" for a documented optional variable.
ENV_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=", re.MULTILINE)


# --- helpers ----------------------------------------------------------------------------------


def settings_env_names() -> frozenset[str]:
    """The environment variable of every ``Settings`` field: prefix + upper-cased name."""
    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == "NOTIFYHUB_", f"Settings env_prefix changed to {prefix!r}: update this test"
    return frozenset(f"{prefix}{name}".upper() for name in Settings.model_fields)


@cache
def compose() -> dict[str, Any]:
    # safe_load resolves the x-* anchors and `<<` merge keys as Compose does.
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


def services() -> dict[str, dict[str, Any]]:
    found = compose().get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml defines no services"
    return found


def is_notifyhub_service(service: dict[str, Any]) -> bool:
    """Built from this repository, or running its image."""
    if "build" in service:
        return True
    image = str(service.get("image", ""))
    repository = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return repository == IMAGE_NAME


def notifyhub_services() -> dict[str, dict[str, Any]]:
    found = {name: svc for name, svc in services().items() if is_notifyhub_service(svc)}
    assert found, "no service in docker-compose.yml builds or runs the notifyhub image"
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands, found through its subparsers action."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, argparse.ArgumentParser] = dict(action.choices)
            return choices
    raise AssertionError("the notifyhub parser has no subcommands")


def command_argv(command: object) -> list[str]:
    """A Compose ``command`` (string or list) as the argv handed to the entrypoint."""
    if isinstance(command, str):
        return shlex.split(command)
    if isinstance(command, list):
        return [str(part) for part in command]
    raise AssertionError(f"unexpected command {command!r}")


def parse_error(argv: list[str]) -> str | None:
    """None when ``notifyhub <argv>`` parses, else why not."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse reports usage errors by exiting
        return f"`notifyhub {shlex.join(argv)}` does not parse (exit {exc.code})"
    return None


def environment_names(environment: object) -> list[str]:
    """Variable names of a Compose ``environment`` (mapping or ``NAME=value`` list)."""
    if environment is None:
        return []
    if isinstance(environment, dict):
        return [str(name) for name in environment]
    if isinstance(environment, list):
        return [str(item).split("=", 1)[0] for item in environment]
    raise AssertionError(f"unexpected environment {environment!r}")


def strings_in(node: object) -> Iterator[str]:
    """Every string (keys and values) in a loaded YAML document; comments are gone."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def interpolated_variables() -> dict[str, bool]:
    """Variables Compose substitutes into the file, each with whether it is required."""
    found: dict[str, bool] = {}
    for text in strings_in(compose()):
        for match in INTERPOLATION.finditer(text.replace("$$", "")):
            name = match.group(1) or match.group(3)
            required = (match.group(2) or "").startswith((":?", "?"))
            found[name] = found.get(name, False) or required
    return found


def env_example_assignments() -> dict[str, bool]:
    """Variables documented in .env.example, each with whether it is set (not commented)."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    found: dict[str, bool] = {}
    for match in ENV_ASSIGNMENT.finditer(text):
        found[match.group(2)] = found.get(match.group(2), False) or match.group(1) is None
    return found


def env_example_values() -> dict[str, str]:
    """The values .env.example sets (commented-out lines excluded)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line and not line.lstrip().startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's variable substitution, for the forms this project uses."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        modifier = match.group(2) or ""
        value = variables.get(name)
        if modifier.startswith((":?", "?")):
            assert value, f"{name} is required: {modifier.lstrip(':?')}"
            return value
        if modifier.startswith(":-"):
            return value or modifier[2:]
        if modifier.startswith("-"):
            return modifier[1:] if value is None else value
        assert not modifier, f"unsupported interpolation {match.group(0)}"
        return value or ""

    return INTERPOLATION.sub(replace, text.replace("$$", "\0")).replace("\0", "$")


def one_shot_services() -> set[str]:
    """Services others wait on to finish (``service_completed_successfully``)."""
    one_shots: set[str] = set()
    for service in services().values():
        depends_on = service.get("depends_on")
        if isinstance(depends_on, dict):
            for name, spec in depends_on.items():
                if isinstance(spec, dict) and spec.get("condition") == (
                    "service_completed_successfully"
                ):
                    one_shots.add(name)
    return one_shots


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment line inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, arguments.strip()))
    assert stages, "the Dockerfile has no FROM"
    return stages


def exec_form(arguments: str) -> list[str]:
    """An ENTRYPOINT/CMD in JSON (exec) form or shell form, as a list of words."""
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list)
        return [str(word) for word in parsed]
    return shlex.split(arguments)


# --- (a) commands are real subcommands ----------------------------------------------------------


def test_notifyhub_services_run_real_subcommands() -> None:
    known = subcommands(build_parser())
    problems: list[str] = []
    for name, service in notifyhub_services().items():
        entrypoint = service.get("entrypoint")
        if entrypoint is not None and command_argv(entrypoint) != [IMAGE_NAME]:
            problems.append(f"{name}: entrypoint {entrypoint!r} bypasses the notifyhub CLI")
        if "command" not in service:
            problems.append(f"{name}: no command (say which notifyhub subcommand it runs)")
            continue
        argv = command_argv(service["command"])
        if not argv or argv[0] not in known:
            first = argv[0] if argv else "(empty)"
            problems.append(f"{name}: {first!r} is not a notifyhub subcommand {sorted(known)}")
            continue
        error = parse_error(argv)
        if error:
            problems.append(f"{name}: {error}")
    assert not problems, "\n".join(problems)


def test_hub_serves_after_a_one_shot_migrate() -> None:
    hub = services().get(HUB_SERVICE)
    assert hub is not None and is_notifyhub_service(hub), "no notifyhub `hub` service"
    assert command_argv(hub["command"])[0] == "serve"
    migrates = [
        name
        for name, svc in notifyhub_services().items()
        if command_argv(svc.get("command", []))[:1] == ["migrate"]
    ]
    assert migrates, "no service runs `notifyhub migrate`"
    depends_on = hub.get("depends_on")
    assert isinstance(depends_on, dict), "hub.depends_on must be a mapping with conditions"
    assert any(
        (depends_on.get(name) or {}).get("condition") == "service_completed_successfully"
        for name in migrates
    ), f"hub must wait for {migrates} to complete successfully"


# --- (b) every NOTIFYHUB_* variable is a Settings field ----------------------------------------


def test_every_notifyhub_variable_is_a_settings_field() -> None:
    fields = settings_env_names()
    problems: list[str] = []
    for path in (COMPOSE_FILE, ENV_EXAMPLE, DOCKERFILE):
        names = set(NOTIFYHUB_NAME.findall(path.read_text(encoding="utf-8")))
        assert names, f"{path.name} names no NOTIFYHUB_ variable: is this check still looking?"
        problems += [f"{path.name}: {name}" for name in sorted(names - fields)]
    assert not problems, (
        "not a field of hub.settings.Settings (NOTIFYHUB_ + field name, upper case):\n"
        + "\n".join(problems)
    )


def test_notifyhub_services_environment_names_are_settings_fields() -> None:
    # Catches what the text scan cannot: a key without the prefix, which Settings ignores.
    fields = settings_env_names()
    problems: list[str] = []
    for name, service in notifyhub_services().items():
        for variable in environment_names(service.get("environment")):
            if variable not in fields:
                problems.append(f"{name}: {variable}")
    assert not problems, "environment names that are not Settings fields:\n" + "\n".join(problems)


def test_the_production_essentials_are_set() -> None:
    for name, service in notifyhub_services().items():
        environment = service.get("environment")
        assert isinstance(environment, dict), f"{name}: environment must be a mapping"
        assert environment.get("NOTIFYHUB_ENV") == "production", name
        assert str(environment.get("NOTIFYHUB_DATABASE_URL", "")).startswith(
            "postgresql+asyncpg://"
        ), name
        for variable in (
            "NOTIFYHUB_REDIS_URL",
            "NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS",
            "NOTIFYHUB_AUTH_SERVICE_URL",
        ):
            assert environment.get(variable), f"{name}: {variable} is not set"
        # Never a default secret: Compose must refuse to start without one.
        assert re.fullmatch(
            r"\$\{NOTIFYHUB_JWT_SECRET:?\?[^}]*\}", str(environment.get("NOTIFYHUB_JWT_SECRET"))
        ), f"{name}: NOTIFYHUB_JWT_SECRET must be ${{NOTIFYHUB_JWT_SECRET:?...}}"


def test_settings_accept_the_compose_environment_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a container gets after `cp .env.example .env` and filling in the required values:
    # every default in the file must be a value Settings accepts, in production.
    variables = {
        **env_example_values(),
        "POSTGRES_PASSWORD": "0123456789abcdef",
        "NOTIFYHUB_JWT_SECRET": "x" * 40,
    }
    for name in list(os.environ):
        if name.upper().startswith("NOTIFYHUB_"):
            monkeypatch.delenv(name)
    for name, service in notifyhub_services().items():
        environment = service.get("environment")
        assert isinstance(environment, dict), f"{name}: environment must be a mapping"
        for variable, value in environment.items():
            monkeypatch.setenv(str(variable), interpolate(str(value), variables))
        settings = Settings(_env_file=None)
        settings.check_for_production()
        assert settings.is_production
        assert settings.database_url == (
            "postgresql+asyncpg://notifyhub:0123456789abcdef@postgres:5432/notifyhub"
        )
        assert settings.redis_url and settings.kafka_bootstrap_servers
        assert settings.jwt_secret.get_secret_value() == "x" * 40


def test_env_example_documents_every_variable_compose_reads() -> None:
    documented = env_example_assignments()
    problems: list[str] = []
    for name, required in sorted(interpolated_variables().items()):
        if name not in documented:
            problems.append(f"{name} is read by docker-compose.yml but not in .env.example")
        elif required and not documented[name]:
            problems.append(f"{name} is required by docker-compose.yml but commented out")
    assert not problems, "\n".join(problems)


# --- (c), (d) healthchecks and start order ------------------------------------------------------


def test_every_service_has_a_healthcheck() -> None:
    one_shots = one_shot_services()
    problems: list[str] = []
    for name, service in services().items():
        healthcheck = service.get("healthcheck")
        if not isinstance(healthcheck, dict):
            problems.append(f"{name}: no healthcheck")
        elif name in one_shots:
            continue  # runs to completion; `disable: true` is the honest healthcheck
        elif healthcheck.get("disable") or not healthcheck.get("test"):
            problems.append(f"{name}: long-running service with its healthcheck disabled")
        elif command_argv(healthcheck["test"])[:1] == ["NONE"]:
            problems.append(f"{name}: healthcheck test is NONE")
    assert not problems, "\n".join(problems)


def test_hub_waits_for_healthy_postgres_and_redis() -> None:
    depends_on = services()[HUB_SERVICE].get("depends_on")
    assert isinstance(depends_on, dict), "hub.depends_on must be a mapping with conditions"
    for dependency in ("postgres", "redis"):
        assert dependency in services(), f"no {dependency} service"
        spec = depends_on.get(dependency)
        assert isinstance(spec, dict) and spec.get("condition") == "service_healthy", (
            f"hub must depend on {dependency} with condition service_healthy"
        )


def test_services_waited_on_as_healthy_define_a_healthcheck() -> None:
    for name, service in services().items():
        depends_on = service.get("depends_on")
        if not isinstance(depends_on, dict):
            continue
        for dependency, spec in depends_on.items():
            assert dependency in services(), f"{name} depends on unknown service {dependency}"
            if isinstance(spec, dict) and spec.get("condition") == "service_healthy":
                healthcheck = services()[dependency].get("healthcheck") or {}
                assert healthcheck.get("test") and not healthcheck.get("disable"), (
                    f"{name} waits for {dependency} to be healthy, which it can never be"
                )


# --- (e) the image ------------------------------------------------------------------------------


def test_dockerfile_runs_the_cli_as_a_non_root_user() -> None:
    stages = dockerfile_stages()
    final = stages[-1]
    base = final[0][1].split()[0]
    assert base == "python:3.11-slim", f"final stage is based on {base}"

    entrypoints = [args for instruction, args in final if instruction == "ENTRYPOINT"]
    assert entrypoints, "the final stage sets no ENTRYPOINT"
    assert exec_form(entrypoints[-1]) == [IMAGE_NAME]

    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts.get(IMAGE_NAME) == "hub.cli:main", "the notifyhub console script moved"

    commands = [args for instruction, args in final if instruction == "CMD"]
    assert commands, "the final stage sets no default CMD"
    default = exec_form(commands[-1])
    assert default[:1] == ["serve"]
    assert parse_error(default) is None

    users = [args for instruction, args in final if instruction == "USER"]
    assert users, "the final stage sets no USER: the hub would run as root"
    user = users[-1].split(":", 1)[0]
    assert user not in ROOT_USERS, f"USER {users[-1]} is root"


def test_dockerfile_exposes_the_port_and_checks_healthz() -> None:
    final = dockerfile_stages()[-1]
    arguments = {instruction: args for instruction, args in final}
    assert "8004" in arguments.get("EXPOSE", "").split()
    assert "/healthz" in arguments.get("HEALTHCHECK", "")
    assert "urllib" in arguments.get("HEALTHCHECK", "")
    environment = " ".join(args for instruction, args in final if instruction == "ENV")
    assert "NOTIFYHUB_HOST=0.0.0.0" in environment
    assert (ROOT / ".dockerignore").is_file()


def _duplicate_keys(node: yaml.Node, path: str = "") -> list[str]:
    """Mapping keys given twice anywhere (PyYAML silently keeps the last one)."""
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen and name != "<<":
                found.append(f"{path}/{name}")
            seen.add(name)
            found += _duplicate_keys(value, f"{path}/{name}")
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, f"{path}[{index}]")
    return found


def test_no_key_is_given_twice() -> None:
    node = yaml.compose((ROOT / "docker-compose.yml").read_text())
    assert node is not None
    assert _duplicate_keys(node) == []


def test_the_hub_leaves_kafka_to_the_consumer_service() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"hub", "worker", "consumer"} <= set(services)
    assert services["hub"]["environment"]["NOTIFYHUB_KAFKA_CONSUME_IN_SERVE"] == "false"


# --- (f) startup order and healthchecks that mean something (issue 10, item 10) -----------------


def compose_environment(service: str, **overrides: str) -> dict[str, str]:
    """The environment a service's container gets after `cp .env.example .env` and filling
    in the required values (interpolated as Compose would)."""
    variables = {
        **env_example_values(),
        "POSTGRES_PASSWORD": "0123456789abcdef",
        "NOTIFYHUB_JWT_SECRET": "x" * 40,
    }
    environment = services()[service].get("environment")
    assert isinstance(environment, dict), f"{service}: environment must be a mapping"
    resolved = {str(k): interpolate(str(v), variables) for k, v in environment.items()}
    resolved.update(overrides)
    return resolved


def healthcheck_argv(service: str) -> list[str]:
    test = command_argv(services()[service]["healthcheck"]["test"])
    assert test[0] in {"CMD", "CMD-SHELL"}, f"{service}: healthcheck {test}"
    if test[0] == "CMD-SHELL":
        return shlex.split(" ".join(test[1:]))
    return test[1:]


def test_postgres_is_healthy_only_when_it_accepts_tcp_connections() -> None:
    argv = healthcheck_argv("postgres")
    assert argv[0] == "pg_isready"
    # Without -h, pg_isready asks the Unix socket, where the image's init server already
    # accepts while TCP clients (every other service) are refused.
    host = argv[argv.index("-h") + 1] if "-h" in argv else None
    assert host == "127.0.0.1", f"pg_isready must check TCP on 127.0.0.1, not {host}: {argv}"


def test_migrate_waits_for_the_database() -> None:
    migrate = services()["migrate"]
    argv = command_argv(migrate["command"])
    environment = compose_environment("migrate")
    wait = (
        float(argv[argv.index("--wait") + 1])
        if "--wait" in argv
        else float(environment.get("NOTIFYHUB_MIGRATE_WAIT_SECONDS", "0"))
    )
    assert wait >= 60, "migrate must wait for PostgreSQL (a first start takes seconds to minutes)"
    assert parse_error(argv) is None
    depends_on = migrate.get("depends_on") or {}
    assert (depends_on.get("postgres") or {}).get("condition") == "service_healthy"


def test_hub_healthcheck_is_readiness_and_can_fail(tmp_path: Path) -> None:
    """Run the hub's own healthcheck command against a stand-in for /readyz."""
    import http.server
    import subprocess
    import sys
    import threading

    argv = healthcheck_argv(HUB_SERVICE)
    script = " ".join(argv)
    assert "/readyz" in script and "/healthz" not in script, argv
    assert argv[0] == "python" and argv[1] == "-c", argv

    status = {"code": 503}

    class Readyz(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = argv[2].replace(":8004/", f":{server.server_address[1]}/")
    assert code != argv[2], "the healthcheck no longer probes port 8004"
    try:
        outcomes = {}
        for status["code"] in (503, 200):
            result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
            )
            outcomes[status["code"]] = result.returncode
    finally:
        server.shutdown()
    assert outcomes[503] != 0, "an unready hub must be unhealthy"
    assert outcomes[200] == 0


@pytest.mark.parametrize("service", ["worker", "consumer"])
def test_worker_and_consumer_healthchecks_can_fail(service: str, tmp_path: Path) -> None:
    """Run the service's healthcheck in its own environment: a fresh heartbeat passes, a
    missing or stale one fails (``os.kill(1, 0)`` could not)."""
    import subprocess

    from tests.harness.processes import NOTIFYHUB

    argv = healthcheck_argv(service)
    assert argv[0] == IMAGE_NAME and parse_error(argv[1:]) is None, argv
    assert "os.kill" not in " ".join(argv)
    environment = compose_environment(service)
    assert environment.get("NOTIFYHUB_HEARTBEAT_FILE"), f"{service} writes no heartbeat"
    heartbeat = tmp_path / "heartbeat"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFYHUB_")},
        **environment,
        "NOTIFYHUB_HEARTBEAT_FILE": str(heartbeat),
    }

    def check() -> int:
        result = subprocess.run(
            [NOTIFYHUB, *argv[1:]], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode

    assert check() == 1, "no heartbeat yet: unhealthy"
    heartbeat.touch()
    assert check() == 0
    interval = float(environment.get("NOTIFYHUB_HEARTBEAT_INTERVAL_SECONDS", "10"))
    stale = heartbeat.stat().st_mtime - 4 * interval
    os.utime(heartbeat, (stale, stale))
    assert check() == 1, "a stale heartbeat: unhealthy"
    # The container's own healthcheck must fire before Docker's timeout kills it.
    healthcheck = services()[service]["healthcheck"]
    assert healthcheck.get("retries", 3) >= 1 and "timeout" in healthcheck


def test_the_hub_does_not_wait_for_kafka() -> None:
    assert "kafka" not in (services()[HUB_SERVICE].get("depends_on") or {}), (
        "the hub does not consume: Kafka being down must not keep it from starting"
    )
    consumer = services()["consumer"].get("depends_on") or {}
    assert (consumer.get("kafka") or {}).get("condition") == "service_healthy"


PINNED_TAG = re.compile(r"^[^@]+:v?\d+\.\d+(\.\d+)?(-[\w.]+)?$|@sha256:[0-9a-f]{64}$")


def test_third_party_images_are_pinned() -> None:
    problems = [
        f"{name}: {service.get('image')!r}"
        for name, service in services().items()
        if not is_notifyhub_service(service)
        and not PINNED_TAG.search(str(service.get("image", "")))
    ]
    assert not problems, "pin a version tag (x.y or x.y.z) or a digest:\n" + "\n".join(problems)


def published_addresses() -> list[tuple[str, str]]:
    """(service, host address) of every published port, with .env.example's defaults."""
    variables = env_example_values()
    found: list[tuple[str, str]] = []
    for name, service in services().items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                found.append((name, interpolate(str(port.get("host_ip", "")), variables)))
                continue
            parts = interpolate(str(port), variables).split(":")
            found.append((name, parts[0] if len(parts) == 3 else ""))
    return found


def test_ports_are_published_on_loopback_by_default() -> None:
    published = published_addresses()
    assert published, "the hub publishes no port"
    exposed = [(name, address) for name, address in published if address != "127.0.0.1"]
    assert not exposed, f"published beyond 127.0.0.1 by default: {exposed}"


def test_readme_shows_how_to_mint_a_token_for_the_stack() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(
        rf"docker compose exec (?:-T )?{HUB_SERVICE} notifyhub (token [^\n`)]*)", readme
    )
    assert commands, "README must show `docker compose exec hub notifyhub token ...`"
    for command in commands:
        assert parse_error(shlex.split(command)) is None, command
    assert "docker compose exec hub notifyhub token" in COMPOSE_FILE.read_text(encoding="utf-8")
