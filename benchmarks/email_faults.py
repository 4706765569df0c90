"""Email under faults at a realistic scale: real ``notifyhub worker`` processes, PostgreSQL,
Redis, an aiosmtpd server that is slow or down, and ``kill -9`` of a worker.

Two scenarios, each on a task queue of its own:

- ``slow``: ``--emails`` (300) emails, the SMTP server answering each message after
  ``--smtp-delay`` (0.5 s), lease 5 s, stream reclaim 10 s, ``--workers`` (2) workers with
  4 pooled connections each; one worker is killed with SIGKILL at a random moment mid-run
  and restarted a second later.
- ``outage``: the SMTP server is down for ``--outage-seconds`` (300) with
  ``--outage-emails`` (240) queued; one worker is killed with SIGKILL halfway through the
  outage and restarted; then the server comes back. Production retry settings (base 2 s,
  cap 300 s, window 1 day).

What is counted, at the SMTP server, per ``Message-ID`` (one per email, the same on every
attempt): duplicates (received more than once) and lost (never received); for the outage,
how many emails were tried during it, how many ended ``failed``, and how long the backlog
took to drain once the server was back against what the pooled connections can carry.

The server takes a message only with its reply (aiosmtpd drops it when the client
disconnects first). A kill landing in the milliseconds between the server's reply and the
worker's record of it would still give a duplicate, recognisable by its Message-ID; the
kill here falls at a random moment, so the figure shows how rare that is.

    .venv/bin/python benchmarks/email_faults.py --help
    .venv/bin/python benchmarks/email_faults.py                        # both, ~7 minutes
    .venv/bin/python benchmarks/email_faults.py --scenario outage --outage-seconds 30
"""

from __future__ import annotations

import sys
from pathlib import Path

# A script in benchmarks/ has that folder first on sys.path, where benchmarks/email.py would
# shadow the standard library's ``email`` package (aiosmtplib imports it).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO = _HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from typing import IO, Any  # noqa: E402

import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker  # noqa: E402

from benchmarks.machine import code_version, cpu_model, package_version  # noqa: E402
from db.engine import make_engine, make_session_factory  # noqa: E402
from db.models import Email  # noqa: E402
from hub.services.emails import EmailRequest, EmailService  # noqa: E402
from hub.settings import Settings  # noqa: E402
from tasks.broker import build_broker  # noqa: E402
from tasks.email import TaskiqEmailQueue  # noqa: E402
from tasks.smtp import stable_message_id  # noqa: E402
from tests.harness.auth_service import AuthServiceStub, build_stub_app  # noqa: E402
from tests.harness.hub import settings_environment  # noqa: E402
from tests.harness.services import migrated_database  # noqa: E402
from tests.harness.smtp import SmtpSink, smtp_config, start_smtp_sink  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
SENDER = "hr@bench.example"
TENANT = "bench"
POOL_CONNECTIONS = 4
TEMPLATE = {"subject": "Interview for {{ job }}", "html": "<p>Hello {{ name }}</p>"}


class Stack:
    """What both scenarios share: the database, the auth-service stand-in, the SMTP sink."""

    def __init__(self, args: argparse.Namespace, database_url: str, auth_url: str) -> None:
        self.args = args
        self.database_url = database_url
        self.auth_url = auth_url
        self.logs = Path(tempfile.mkdtemp(prefix="notifyhub-email-faults-"))
        engine = make_engine(database_url, pool_size=4)
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = make_session_factory(engine)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "env": "test",
            "database_url": self.database_url,
            "redis_url": self.args.redis_url,
            "socketio_channel": f"notifyhub-bench-{uuid.uuid4().hex[:10]}",
            "jwt_secret": secrets.token_urlsafe(48),
            "auth_service_url": self.auth_url,
            "smtp_max_connections": POOL_CONNECTIONS,
            "email_lease_seconds": self.args.lease_seconds,
            "email_task_reclaim_seconds": self.args.reclaim_seconds,
            "log_level": os.environ.get("NOTIFYHUB_BENCH_WORKER_LOG_LEVEL", "WARNING"),
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def start_worker(self, settings: Settings, name: str) -> subprocess.Popen[bytes]:
        log: IO[bytes] = (self.logs / f"{name}.log").open("ab")
        env = {**os.environ, **settings_environment(settings)}
        return subprocess.Popen(
            [sys.executable, "-m", "hub", "worker"], env=env, stdout=log, stderr=log, cwd=REPO
        )

    async def statuses(self, ids: list[str]) -> Counter[str]:
        async with self.sessions() as session:
            rows = await session.execute(
                select(Email.status, func.count()).where(Email.id.in_(ids)).group_by(Email.status)
            )
            return Counter({status: int(count) for status, count in rows})

    async def attempts(self, ids: list[str]) -> Counter[int]:
        async with self.sessions() as session:
            rows = await session.execute(select(Email.attempts).where(Email.id.in_(ids)))
            return Counter(int(n) for (n,) in rows)

    async def wait_sent(self, ids: list[str], within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if (await self.statuses(ids)).get("sent", 0) == len(ids):
                return True
            await asyncio.sleep(0.2)
        return False


async def queue_emails(settings: Settings, stack: Stack, count: int, label: str) -> list[str]:
    broker = build_broker(settings)
    await broker.startup()  # creates the consumer group before anything is sent
    service = EmailService(
        queue=TaskiqEmailQueue(broker),
        sessions=stack.sessions,
        sweep_after_seconds=settings.email_task_reclaim_seconds,
    )
    try:
        ids = []
        for i in range(count):
            request = EmailRequest(
                TENANT, f"{label}{i}@example.com", None, "interview", {"name": "A", "job": "B"}
            )
            ids.append(await service.send(request))
        return ids
    finally:
        await broker.shutdown()


def delivery_counts(sink: SmtpSink, ids: list[str]) -> dict[str, int]:
    received = Counter(sink.message_ids())
    expected = {stable_message_id(i, sender=SENDER) for i in ids}
    return {
        "emails": len(ids),
        "messages_received": sum(received.values()),
        "duplicates": sum(n - 1 for mid, n in received.items() if mid in expected),
        "lost": len(expected - set(received)),
        "unexpected": len(set(received) - expected),
    }


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


async def stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        try:
            await asyncio.to_thread(process.wait, 20)
        except subprocess.TimeoutExpired:
            kill(process)


async def scenario_slow(stack: Stack, sink: SmtpSink) -> dict[str, Any]:
    args = stack.args
    sink.messages.clear()
    sink.delay_seconds = args.smtp_delay
    sink.max_in_data = 0
    settings = stack.settings()
    ids = await queue_emails(settings, stack, args.emails, "slow")
    capacity = args.workers * POOL_CONNECTIONS / args.smtp_delay
    expected_seconds = args.emails / capacity
    started = time.monotonic()
    workers = [stack.start_worker(settings, f"slow-{i}") for i in range(args.workers)]
    kill_at = random.uniform(0.25, 0.6) * expected_seconds + 1.5  # workers take ~1 s to start
    await asyncio.sleep(kill_at)
    in_flight_before = sink.in_data
    kill(workers[0])
    killed_at = time.monotonic() - started
    await asyncio.sleep(1.0)
    in_flight_after = sink.in_data
    workers.append(stack.start_worker(settings, "slow-0-restarted"))
    done = await stack.wait_sent(ids, within=expected_seconds * 4 + 60)
    elapsed = time.monotonic() - started
    await stop_all(workers)
    return {
        "smtp_delay_seconds": args.smtp_delay,
        "workers": args.workers,
        "pool_connections_per_worker": POOL_CONNECTIONS,
        "lease_seconds": settings.email_lease_seconds,
        "reclaim_seconds": settings.email_task_reclaim_seconds,
        "killed_at_seconds": round(killed_at, 2),
        "messages_in_data_at_kill": in_flight_before,
        "messages_in_data_1s_after_kill": in_flight_after,
        "all_sent": done,
        "seconds_to_all_sent": round(elapsed, 2),
        "pool_capacity_per_second": capacity,
        "emails_per_second": round(args.emails / elapsed, 2),
        "statuses": dict(await stack.statuses(ids)),
        "attempts": {str(k): v for k, v in sorted((await stack.attempts(ids)).items())},
        **delivery_counts(sink, ids),
    }


async def scenario_outage(
    stack: Stack, sink: SmtpSink, controllers: list[Controller]
) -> dict[str, Any]:
    args = stack.args
    sink.messages.clear()
    sink.received_at.clear()
    sink.delay_seconds = args.smtp_delay
    controllers.pop().stop()
    settings = stack.settings()  # production retry settings: base 2 s, cap 300 s, 1 day
    ids = await queue_emails(settings, stack, args.outage_emails, "outage")
    down_at = time.monotonic()
    workers = [stack.start_worker(settings, f"outage-{i}") for i in range(args.workers)]
    await asyncio.sleep(args.outage_seconds / 2)
    kill(workers[0])
    await asyncio.sleep(1.0)
    workers.append(stack.start_worker(settings, "outage-0-restarted"))
    await asyncio.sleep(max(0.0, args.outage_seconds - (time.monotonic() - down_at)))
    attempts_in_outage = await stack.attempts(ids)
    statuses_in_outage = await stack.statuses(ids)
    sink.max_in_data = 0
    back_at = time.monotonic()
    controllers.append(start_smtp_sink(sink)[1])
    capacity = args.workers * POOL_CONNECTIONS / args.smtp_delay
    done = await stack.wait_sent(ids, within=args.outage_emails / capacity * 4 + 400)
    drain = time.monotonic() - back_at
    stamps = sorted(sink.received_at)
    first_sent = stamps[0] - back_at if stamps else None
    send_phase = stamps[-1] - stamps[0] if len(stamps) > 1 else None
    await stop_all(workers)
    return {
        "outage_seconds": args.outage_seconds,
        "smtp_delay_seconds": args.smtp_delay,
        "workers": args.workers,
        "retry_base_seconds": settings.email_retry_base_seconds,
        "retry_max_seconds": settings.email_retry_max_seconds,
        "retry_window_seconds": settings.email_retry_window_seconds,
        "tried_during_outage": sum(n for k, n in attempts_in_outage.items() if k >= 1),
        "attempts_during_outage": {str(k): v for k, v in sorted(attempts_in_outage.items())},
        "failed_during_outage": statuses_in_outage.get("failed", 0),
        "all_sent": done,
        "drain_seconds_after_return": round(drain, 2),
        # The first retry after the return still waits for its backoff; the rest is released
        # by that first success and goes at pool speed.
        "first_sent_seconds_after_return": round(first_sent, 2) if first_sent else None,
        "first_to_last_sent_seconds": round(send_phase, 2) if send_phase else None,
        "drain_emails_per_second": (
            round((len(stamps) - 1) / send_phase, 2) if send_phase else None
        ),
        "pool_capacity_per_second": capacity,
        "drain_floor_seconds": round(args.outage_emails / capacity, 2),
        "max_messages_in_data_at_once": sink.max_in_data,
        "statuses": dict(await stack.statuses(ids)),
        **delivery_counts(sink, ids),
    }


@contextlib.asynccontextmanager
async def database(admin_url: str) -> AsyncIterator[str]:
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        async with migrated_database(admin, admin_url, prefix="notifyhub_bench") as url:
            yield url
    finally:
        await admin.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sink, controller = start_smtp_sink()
    controllers = [controller]
    stub = AuthServiceStub()
    stub.smtp_configs[TENANT] = smtp_config(sink, SENDER, "Bench")
    stub.templates[(TENANT, "interview")] = TEMPLATE
    runner = web.AppRunner(build_stub_app(stub), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stub.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "packages": {
                name: package_version(name)
                for name in ("taskiq", "taskiq-redis", "redis", "aiosmtplib", "aiosmtpd")
            },
        },
        "code": code_version(),
        "scenarios": {},
    }
    try:
        async with database(args.database_url) as url:
            stack = Stack(args, url, stub.url)
            try:
                if args.scenario in ("slow", "both"):
                    print(f"slow: {args.emails} emails, SMTP {args.smtp_delay}s/message ...")
                    results["scenarios"]["slow"] = await scenario_slow(stack, sink)
                    print(json.dumps(results["scenarios"]["slow"], indent=2))
                if args.scenario in ("outage", "both"):
                    print(
                        f"outage: {args.outage_emails} emails, SMTP down "
                        f"{args.outage_seconds:.0f}s ..."
                    )
                    results["scenarios"]["outage"] = await scenario_outage(stack, sink, controllers)
                    print(json.dumps(results["scenarios"]["outage"], indent=2))
            finally:
                await stack.engine.dispose()
                print(f"worker logs: {stack.logs}")
    finally:
        await runner.cleanup()
        for each in controllers:
            each.stop()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scenario", choices=("slow", "outage", "both"), default="both")
    parser.add_argument("--emails", type=int, default=300, help="emails in the slow scenario")
    parser.add_argument(
        "--outage-emails", type=int, default=240, help="emails queued in the outage"
    )
    parser.add_argument("--outage-seconds", type=float, default=300.0, help="SMTP down this long")
    parser.add_argument("--smtp-delay", type=float, default=0.5, help="seconds per message")
    parser.add_argument("--workers", type=int, default=2, help="notifyhub worker processes")
    parser.add_argument("--lease-seconds", type=float, default=5.0)
    parser.add_argument("--reclaim-seconds", type=float, default=10.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("NOTIFYHUB_TEST_DATABASE_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL where a scratch database may be created",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("NOTIFYHUB_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "email_faults.json"
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    results = asyncio.run(run(args))
    results["arguments"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
