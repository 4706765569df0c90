"""Scheduled events at scale: real ``notifyhub serve`` and ``notifyhub worker`` processes,
PostgreSQL and Redis, and ``kill -9`` of every one of them.

Two scenarios, each on a scratch database and task queue of its own:

- ``restart``: ``--items`` (10,000) events, each with a notification and an email part,
  due uniformly over the next ``--spread`` (60) seconds, stored through the same
  ``EventApplier`` as every source (batches of 500, like a Kafka batch). One ``serve`` and
  ``--workers`` (2) workers run; ``--kill-after`` (20) seconds into the spread every process
  gets SIGKILL, and all are started again ``--down-seconds`` (2) later. Counted: the
  notifications per event (lost: none; duplicated: more than one) and the email records per
  event (no auth service is configured, so each email ends ``failed`` at once: what counts
  is that each event made exactly one).
- ``lateness``: ``--rate`` (1,000) events due per second for ``--seconds`` (10) seconds,
  with the workers running throughout. Lateness of each = its notification's stored time
  (``created_at``, in the transaction that applies it; the live emit follows the commit)
  minus its ``send_at``: p50, p99 and max.

    .venv/bin/python benchmarks/scheduled.py --help
    .venv/bin/python benchmarks/scheduled.py                      # both, ~3 minutes
    .venv/bin/python benchmarks/scheduled.py --scenario lateness --rate 2000
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
import secrets  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from typing import IO, Any  # noqa: E402

import asyncpg  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker  # noqa: E402

from benchmarks.cli import add_doc_options  # noqa: E402
from benchmarks.machine import code_version, free_port, machine_info  # noqa: E402
from benchmarks.report import replace_section, update_doc_if_asked, write_results  # noqa: E402
from db.engine import make_engine, make_session_factory  # noqa: E402
from db.models import Email, Notification, ScheduledEvent  # noqa: E402
from hub.delivery.bus import redis_bus  # noqa: E402
from hub.intake.apply import EventApplier  # noqa: E402
from hub.intake.envelope import EventEnvelope  # noqa: E402
from hub.settings import Settings  # noqa: E402
from hub.wiring import build_services  # noqa: E402
from tasks.broker import build_broker  # noqa: E402
from tests.harness.hub import settings_environment  # noqa: E402
from tests.harness.services import migrated_database  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
TENANT = "bench"
INTAKE_BATCH = 500
START = "<!-- scheduled-results:start -->"
END = "<!-- scheduled-results:end -->"


@contextlib.asynccontextmanager
async def database(admin_url: str) -> AsyncIterator[str]:
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        async with migrated_database(admin, admin_url, prefix="notifyhub_bench") as url:
            yield url
    finally:
        await admin.close()


class Stack:
    """One scenario's processes (serve and workers) on one database and task queue."""

    def __init__(self, args: argparse.Namespace, database_url: str) -> None:
        self.args = args
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            env="test",
            database_url=database_url,
            redis_url=args.redis_url,
            socketio_channel=f"notifyhub-bench-{uuid.uuid4().hex[:10]}",
            jwt_secret=secrets.token_urlsafe(48),
            log_level=os.environ.get("NOTIFYHUB_BENCH_LOG_LEVEL", "WARNING"),
        )
        self.logs = Path(tempfile.mkdtemp(prefix="notifyhub-scheduled-"))
        self.engine = make_engine(database_url, pool_size=4)
        self.sessions: async_sessionmaker[AsyncSession] = make_session_factory(self.engine)
        self.processes: list[subprocess.Popen[bytes]] = []

    def _spawn(self, command: list[str], name: str, extra: dict[str, str]) -> None:
        log: IO[bytes] = (self.logs / f"{name}.log").open("ab")
        env = {**os.environ, **settings_environment(self.settings), **extra}
        self.processes.append(
            subprocess.Popen(  # noqa: S603 - our own CLI, our own arguments
                [sys.executable, "-m", "hub", *command],
                env=env,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        )

    def start(self) -> None:
        port = free_port()
        self._spawn(
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            "serve",
            {"NOTIFYHUB_PORT": str(port)},
        )
        for number in range(self.args.workers):
            self._spawn(["worker"], f"worker-{number}", {})

    def kill_all(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGKILL)
        for process in self.processes:
            process.wait()
        self.processes = []

    async def stop_all(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await asyncio.to_thread(process.wait, 20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes = []

    async def count(self, query: Any) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(query) or 0)

    async def pending(self) -> int:
        return await self.count(
            select(func.count())
            .select_from(ScheduledEvent)
            .where(ScheduledEvent.status == "pending")
        )


def document(number: int, due: dt.datetime, *, email: bool) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"e-{number}",
        "tenant_id": TENANT,
        "type": "deal.updated",
        "recipients": [{"user_id": f"u-{number % 1000}", "email": "ann@example.com"}],
        "notification": {"title": f"e-{number}", "body": ""},
        "send_at": due.isoformat(),
    }
    if email:
        event["email"] = {"template_key": "note", "context": {}}
    return event


async def schedule(stack: Stack, dues: list[dt.datetime], *, email: bool) -> float:
    """Store the events through the intake's applier; seconds it took."""
    settings = stack.settings
    redis = Redis.from_url(settings.redis_url or "")
    broker = build_broker(settings)
    await broker.startup()
    began = time.monotonic()
    try:
        services = build_services(
            settings,
            sessions=stack.sessions,
            bus=redis_bus(redis, settings),
            broker=broker,
        )
        apply = EventApplier(
            notifications=services.notifications, emails=services.emails, source="bench"
        )
        for first in range(0, len(dues), INTAKE_BATCH):
            batch = [
                EventEnvelope.model_validate(document(n, dues[n], email=email))
                for n in range(first, min(first + INTAKE_BATCH, len(dues)))
            ]
            await apply(batch)
    finally:
        await broker.shutdown()
        await redis.aclose()
    return time.monotonic() - began


async def wait_applied(stack: Stack, total: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await stack.pending() == 0:
            return True
        await asyncio.sleep(0.5)
    return False


async def per_event_counts(stack: Stack, total: int) -> dict[str, int]:
    async with stack.sessions() as session:
        titles = (
            await session.execute(
                select(Notification.title, func.count()).group_by(Notification.title)
            )
        ).all()
        emails = await session.scalar(select(func.count()).select_from(Email))
    per_title = {title: int(count) for title, count in titles}
    expected = {f"e-{n}" for n in range(total)}
    return {
        "items": total,
        "notifications": sum(per_title.values()),
        "lost": len(expected - set(per_title)),
        "duplicated": sum(1 for title, count in per_title.items() if count > 1),
        "unexpected": len(set(per_title) - expected),
        "email_records": int(emails or 0),
    }


async def scenario_restart(args: argparse.Namespace, url: str) -> dict[str, Any]:
    stack = Stack(args, url)
    try:
        start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.lead_seconds)
        dues = [
            start + dt.timedelta(seconds=args.spread * n / args.items) for n in range(args.items)
        ]
        took = await schedule(stack, dues, email=True)
        print(f"restart: {args.items} events stored in {took:.1f}s")
        stack.start()
        kill_at = start + dt.timedelta(seconds=args.kill_after)
        await asyncio.sleep(max(0.0, (kill_at - dt.datetime.now(dt.UTC)).total_seconds()))
        stack.kill_all()
        pending_at_kill = await stack.pending()
        print(f"restart: kill -9 of every process, {pending_at_kill} still pending")
        await asyncio.sleep(args.down_seconds)
        stack.start()
        all_due = start + dt.timedelta(seconds=args.spread)
        wait = (all_due - dt.datetime.now(dt.UTC)).total_seconds() + 120
        drained = await wait_applied(stack, args.items, wait)
        await asyncio.sleep(3.0)  # emails recorded with their events; let stragglers land
        counts = await per_event_counts(stack, args.items)
        await stack.stop_all()
        return {
            "items": args.items,
            "spread_seconds": args.spread,
            "workers": args.workers,
            "killed_after_seconds": args.kill_after,
            "down_seconds": args.down_seconds,
            "pending_at_kill": pending_at_kill,
            "drained": drained,
            **counts,
            "exactly_once": drained
            and counts["lost"] == 0
            and counts["duplicated"] == 0
            and counts["email_records"] == args.items,
            "logs": str(stack.logs),
        }
    finally:
        with contextlib.suppress(Exception):
            stack.kill_all()
        await stack.engine.dispose()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def scenario_lateness(args: argparse.Namespace, url: str) -> dict[str, Any]:
    stack = Stack(args, url)
    total = int(args.rate * args.seconds)
    try:
        stack.start()
        start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.lead_seconds)
        dues = [start + dt.timedelta(seconds=n / args.rate) for n in range(total)]
        took = await schedule(stack, dues, email=False)
        print(f"lateness: {total} events ({args.rate:.0f}/s) stored in {took:.1f}s")
        if dt.datetime.now(dt.UTC) >= start:
            raise SystemExit("storing took longer than --lead-seconds; raise it")
        drained = await wait_applied(stack, total, args.seconds + 120)
        await stack.stop_all()
        async with stack.sessions() as session:
            rows = (
                await session.execute(
                    select(Notification.created_at, ScheduledEvent.due_at).join(
                        ScheduledEvent,
                        (ScheduledEvent.tenant_id == Notification.tenant_id)
                        & (ScheduledEvent.event_id == Notification.title),
                    )
                )
            ).all()
        late = [(created - due).total_seconds() for created, due in rows]
        first_due = min(due for _, due in rows)
        worst: dict[int, float] = {}
        for (_created, due), value in zip(rows, late, strict=True):
            second = int((due - first_due).total_seconds())
            worst[second] = max(worst.get(second, 0.0), value)
        return {
            "items": total,
            "rate_per_second": args.rate,
            "seconds": args.seconds,
            "workers": args.workers,
            "drained": drained,
            "applied": len(late),
            "lateness_p50_seconds": round(percentile(late, 0.50), 4),
            "lateness_p99_seconds": round(percentile(late, 0.99), 4),
            "lateness_max_seconds": round(max(late), 4),
            "lateness_mean_seconds": round(statistics.fmean(late), 4),
            "within_1s": sum(1 for value in late if value <= 1.0),
            # The worst lateness of the items due in each second of the run.
            "max_by_second": [round(worst[k], 3) for k in sorted(worst)],
            "logs": str(stack.logs),
        }
    finally:
        with contextlib.suppress(Exception):
            stack.kill_all()
        await stack.engine.dispose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(("sqlalchemy", "asyncpg", "taskiq", "redis")),
        "code": code_version(),
        "scenarios": {},
    }
    if args.scenario in ("lateness", "both"):
        async with database(args.database_url) as url:
            results["scenarios"]["lateness"] = await scenario_lateness(args, url)
        print(json.dumps(results["scenarios"]["lateness"], indent=2))
    if args.scenario in ("restart", "both"):
        async with database(args.database_url) as url:
            results["scenarios"]["restart"] = await scenario_restart(args, url)
        print(json.dumps(results["scenarios"]["restart"], indent=2))
    return results


def section(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['started_at']} ({results['machine'].get('nproc')} cores, "
        f"{results['machine'].get('cpu_model')}); raw figures in "
        "`benchmarks/results/scheduled.json`.",
        "",
        "| scenario | figure |",
        "|---|---|",
    ]
    late = results["scenarios"].get("lateness")
    if late:
        lines += [
            f"| lateness, {late['rate_per_second']:.0f} due/s for {late['seconds']:.0f} s, "
            f"{late['workers']} workers | p50 {late['lateness_p50_seconds'] * 1000:.0f} ms, "
            f"p99 {late['lateness_p99_seconds'] * 1000:.0f} ms, max "
            f"{late['lateness_max_seconds'] * 1000:.0f} ms; {late['within_1s']} of "
            f"{late['items']} within 1 s |",
        ]
    restart = results["scenarios"].get("restart")
    if restart:
        lines += [
            f"| kill -9 of serve + {restart['workers']} workers, {restart['items']} items due "
            f"over {restart['spread_seconds']:.0f} s ({restart['pending_at_kill']} pending at "
            f"the kill) | {restart['notifications']} notifications, lost {restart['lost']}, "
            f"duplicated {restart['duplicated']}, {restart['email_records']} email records: "
            f"exactly once: {'yes' if restart['exactly_once'] else 'NO'} |",
        ]
    return "\n".join(lines) + "\n"


def update_doc(path: Path, text: str) -> None:
    replace_section(
        path,
        text,
        start=START,
        end=END,
        missing=f"## Scheduled events: `benchmarks/scheduled.py`\n\n{START}\n{END}\n",
        new_file="# Benchmarks\n",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--scenario", choices=("restart", "lateness", "both"), default="both")
    parser.add_argument("--items", type=int, default=10_000, help="restart: events")
    parser.add_argument("--spread", type=float, default=60.0, help="restart: due over (s)")
    parser.add_argument("--kill-after", type=float, default=20.0, help="restart: kill at (s)")
    parser.add_argument("--down-seconds", type=float, default=2.0, help="restart: down for")
    parser.add_argument("--rate", type=float, default=1000.0, help="lateness: due per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="lateness: for this long")
    parser.add_argument(
        "--lead-seconds",
        type=float,
        default=25.0,
        help="the first item is due this long after storing starts",
    )
    parser.add_argument("--workers", type=int, default=2, help="notifyhub worker processes")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("NOTIFYHUB_TEST_DATABASE_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL where a scratch database may be created",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("NOTIFYHUB_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "scheduled.json"
    )
    add_doc_options(
        parser,
        "the markdown file whose scheduled section is rewritten",
        "rewrite that section with this run's figures",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    results = asyncio.run(run(args))
    results["arguments"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_results(args.output, results)
    print(f"written to {args.output}")
    update_doc_if_asked(args, update_doc, section(results))


if __name__ == "__main__":
    main()
