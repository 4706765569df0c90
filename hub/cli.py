"""The ``notifyhub`` command line: serve, worker, consume, publish, migrate, purge, healthcheck,
token.

A mistake in configuration or in the environment at start (a bad URL, a port in use, a
database or Redis that does not answer) is one line on stderr and exit code 2, never a
traceback: the reader is an operator, and the line says what to change.

Each subcommand imports what it runs when it runs: ``notifyhub token`` or ``healthcheck``
(a container probe every few seconds) should not pay for loading the server, Kafka and
SQLAlchemy. The CLI is the top layer (docs/architecture.md), so these are no cycle dodges.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from hub.logs import setup_logging
from hub.settings import (
    ConfigurationError,
    Settings,
    StartupError,
    describe_settings_error,
    load_settings,
)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from hub.serve import run_server

    run_server(settings, host=args.host or settings.host, port=args.port or settings.port)
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from db.migrate import DatabaseNotReady, current_revision, upgrade_to_head, wait_for_database

    wait: float = settings.migrate_wait_seconds if args.wait is None else args.wait
    try:
        wait_for_database(settings.database_url, timeout=wait)
        upgrade_to_head(settings.database_url)
        revision = current_revision(settings.database_url)
    except DatabaseNotReady as exc:
        raise StartupError(str(exc)) from None
    print(f"database at revision {revision}")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from hub.auth import mint_token

    print(
        mint_token(
            settings,
            tenant_id=args.tenant,
            user_id=args.user,
            roles=args.role,
            ttl_seconds=args.ttl,
        )
    )
    return 0


def _vapid_keys(_settings: Settings, _args: argparse.Namespace) -> int:
    from hub.vapid import generate_vapid_keys

    keys = generate_vapid_keys()
    print(f"NOTIFYHUB_VAPID_PRIVATE_KEY={keys.private_key}")
    print(f"# public key (GET /api/push/vapid-public-key/ serves it): {keys.public_key}")
    return 0


def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    from hub.scheduler import run_scheduler
    from tasks.worker import main as run_worker

    return run_worker(settings, companion=run_scheduler)


def _purge(settings: Settings, _args: argparse.Namespace) -> int:
    import asyncio

    from db.engine import engine_for, make_session_factory
    from hub.services.retention import Purge, PurgePolicy, PurgeReport

    async def run() -> PurgeReport:
        engine = engine_for(settings)
        try:
            return await Purge(
                make_session_factory(engine), PurgePolicy.from_settings(settings)
            ).run()
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(run())
    except Exception as exc:
        from db.outage import is_unavailable

        if not (isinstance(exc, OSError) or is_unavailable(exc)):
            raise
        # Nothing was lost: every batch that committed is done, the next run does the rest.
        raise StartupError(f"the database does not answer ({exc}); run it again later") from None
    print(
        f"purged {report.expired} expired and {report.retained} old notifications, "
        f"{report.messages} chat messages"
    )
    return 0


def _consume(settings: Settings, _args: argparse.Namespace) -> int:
    from hub.consumer import main as run_consumer

    return run_consumer(settings)


def _healthcheck(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from hub.heartbeat import STALE_AFTER_INTERVALS, heartbeat_problem

    if not settings.heartbeat_file:
        raise ConfigurationError(
            "set NOTIFYHUB_HEARTBEAT_FILE (the same for the process and this check): "
            "`worker` and `consume` then keep it fresh while healthy"
        )
    max_age: float = (
        args.max_age
        if args.max_age is not None
        else STALE_AFTER_INTERVALS * settings.heartbeat_interval_seconds
    )
    problem = heartbeat_problem(Path(settings.heartbeat_file), max_age_seconds=max_age)
    if problem is not None:
        # Exit 1 is "unhealthy" to Docker's HEALTHCHECK; 2 stays "misconfigured".
        print(f"notifyhub healthcheck: unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


def _publish(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from hub.producer import InvalidEvent, publish_events, read_event_file
    from hub.rules import NotificationLimits

    limits = NotificationLimits.from_settings(settings)
    try:
        events = read_event_file(args.file, limits=limits)
    except OSError as exc:
        print(f"notifyhub publish: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except InvalidEvent as exc:
        print(f"notifyhub publish: nothing published:\n{exc}", file=sys.stderr)
        return 2
    if not settings.kafka_bootstrap_servers:
        print(
            "notifyhub publish: set NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS (host:port,...); "
            "nothing published",
            file=sys.stderr,
        )
        return 2
    topic = args.topic or settings.kafka_topic
    try:
        count = asyncio.run(
            publish_events(settings.kafka_bootstrap_servers, events, topic=topic, limits=limits)
        )
    except (KafkaError, OSError) as exc:
        print(
            f"notifyhub publish: Kafka at {settings.kafka_bootstrap_servers} did not take the "
            f"events ({type(exc).__name__}: {exc}); publishing again is safe",
            file=sys.stderr,
        )
        return 1
    print(f"published {count} event{'' if count == 1 else 's'} to {topic}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifyhub", description="Realtime notifications and messaging hub."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP + Socket.IO server")
    serve.add_argument("--host", help="interface to bind (default NOTIFYHUB_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default NOTIFYHUB_PORT, 8004)")
    serve.set_defaults(run=_serve, uses_database=True)

    worker = commands.add_parser(
        "worker",
        help="run email and push tasks, webhooks, scheduled events and digests, and the "
        "retention purge until SIGTERM",
    )
    worker.set_defaults(run=_worker, uses_database=True)

    purge = commands.add_parser(
        "purge",
        help="delete expired notifications and those past the retention (and chat messages "
        "past a tenant's chat retention) once, in batches, then exit",
    )
    purge.set_defaults(run=_purge, uses_database=True)

    consume = commands.add_parser("consume", help="run the Kafka event consumer alone")
    consume.set_defaults(run=_consume, uses_database=True)

    publish = commands.add_parser(
        "publish", help="validate CRM events from a JSON file and publish them to Kafka"
    )
    publish.add_argument(
        "--file",
        required=True,
        help='one JSON event, a JSON array of events, or JSON lines; "-" reads stdin',
    )
    publish.add_argument("--topic", help="topic (default NOTIFYHUB_KAFKA_TOPIC, crm.events)")
    publish.set_defaults(run=_publish)

    migrate = commands.add_parser("migrate", help="upgrade the database schema to head")
    migrate.add_argument(
        "--wait",
        type=_seconds,
        metavar="SECONDS",
        help="how long to wait for the database to accept connections "
        "(default NOTIFYHUB_MIGRATE_WAIT_SECONDS, 30)",
    )
    migrate.set_defaults(run=_migrate, uses_database=True)

    healthcheck = commands.add_parser(
        "healthcheck",
        help="exit 0 when the worker or consumer of this container is healthy "
        "(its NOTIFYHUB_HEARTBEAT_FILE is fresh), 1 when not",
    )
    healthcheck.add_argument(
        "--max-age",
        type=_seconds,
        metavar="SECONDS",
        help="oldest heartbeat still healthy (default 3 x NOTIFYHUB_HEARTBEAT_INTERVAL_SECONDS)",
    )
    healthcheck.set_defaults(run=_healthcheck)

    token = commands.add_parser("token", help="mint a development JWT")
    token.add_argument("--tenant", required=True, help="tenant_id claim")
    token.add_argument("--user", required=True, help="sub claim (user id)")
    token.add_argument(
        "--role", action="append", default=[], help="a role claim; repeat for several"
    )
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.set_defaults(run=_token)

    vapid = commands.add_parser("vapid-keys", help="print a new VAPID key pair for Web Push")
    vapid.set_defaults(run=_vapid_keys)
    return parser


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        settings.check_for_production()
        if getattr(args, "uses_database", False):
            settings.check_database_for_production()
    except ValidationError as exc:
        print(f"notifyhub: configuration error: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"notifyhub: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    try:
        result: int = args.run(settings, args)
    except StartupError as exc:
        print(f"notifyhub {args.command}: {exc}", file=sys.stderr)
        return 2
    return result
