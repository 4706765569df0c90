"""Outbox throughput: pushes or webhook deliveries per second one ``notifyhub worker`` sends.

The run stores ``--notifications`` notifications through ``NotificationService`` (so every
push delivery or webhook delivery is recorded in the storing transaction, as in
production), then starts one worker process pinned to one core and times how long it takes
until every delivery is ``sent``. The receiver is a local aiohttp server (another process,
the other core) that answers 2xx to everything.

- ``--kind push``: users with one Web Push device each; a push costs the worker its claim
  (one UPDATE), ECDH + HKDF + AES-GCM encryption (RFC 8291), the request, the outcome.
- ``--kind webhook``: one tenant with ``--endpoints`` endpoints subscribed to
  ``notification.created``; a delivery costs a claim (batched by the sweeper), the
  Standard Webhooks signature (HMAC-SHA256), the request, the outcome and its attempt row.

    .venv/bin/python benchmarks/outbox.py --kind push --quick     # smoke run
    .venv/bin/python benchmarks/outbox.py --kind webhook          # full run: results + docs
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path, and benchmarks/email.py would
# shadow the standard library's ``email`` package that aiohttp imports.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO = _HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

from benchmarks.cli import add_doc_options, apply_quick  # noqa: E402
from benchmarks.database import asyncpg_dsn, create_database, database_url, drop_database  # noqa: E402
from benchmarks.fanout import migrate  # noqa: E402
from benchmarks.machine import free_port, machine_info, process_cpu_seconds  # noqa: E402
from benchmarks.processes import spawn_pinned  # noqa: E402
from benchmarks.report import replace_section, update_doc_if_asked, write_results  # noqa: E402

HOST = "127.0.0.1"
TABLES = {"push": "push_deliveries", "webhook": "webhook_deliveries"}


async def serve_receiver(port: int) -> None:
    """The stand-in push service and webhook receiver (``--serve-sink``): 201 to all."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/{kind}/{name}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=1024).start()
    await asyncio.Event().wait()


async def prepare(args: argparse.Namespace, env: dict[str, str], sink: str) -> None:
    """What the worker will send: devices (push) or endpoints (webhook), then notifications
    stored by the hub's own services."""
    # Imported here: the settings come from ``env``, set just before.
    from db.engine import engine_for, make_session_factory
    from hub.delivery.bus import LocalBus
    from hub.rules import NewNotification
    from hub.settings import Settings
    from hub.wiring import build_services
    from tasks.broker import build_broker
    from tests.harness.push import BrowserSubscription

    settings = Settings(
        _env_file=None, **{k[10:].lower(): v for k, v in env.items() if k.startswith("NOTIFYHUB_")}
    )  # type: ignore[arg-type]
    engine = engine_for(settings)
    sessions = make_session_factory(engine)
    broker = build_broker(settings)
    await broker.startup()
    try:
        services = build_services(settings, sessions=sessions, bus=LocalBus(), broker=broker)
        if args.kind == "push":
            for user in range(args.users):
                subscription = BrowserSubscription(f"{sink}/wp/u{user}").as_json()
                await services.devices.register(
                    tenant_id="bench",
                    user_id=f"u{user}",
                    kind="webpush",
                    token=subscription["endpoint"],
                    keys=subscription["keys"],
                )
        else:
            for endpoint in range(args.endpoints):
                await services.webhooks.create(
                    tenant_id="bench",
                    url=f"{sink}/hook/e{endpoint}",
                    events=["notification.created"],
                )
        for start in range(0, args.notifications, args.users):
            count = min(args.users, args.notifications - start)
            await services.notifications.create(
                tenant_id="bench",
                user_ids=[f"u{i}" for i in range(count)],
                notification=NewNotification(
                    title="Deal won", body="ACME renewed", category="deals"
                ),
            )
    finally:
        await broker.shutdown()
        await engine.dispose()


async def sent_count(dsn: str, table: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {table} WHERE status = 'sent'"))  # noqa: S608 - a name of TABLES
    finally:
        await connection.close()


async def measure_once(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    name = f"notifyhub_outbox_{secrets.token_hex(4)}"
    await create_database(admin, name)
    workdir = Path(tempfile.mkdtemp(prefix="notifyhub-outbox-"))
    sink_port = free_port()
    sink = spawn_pinned(
        [sys.executable, __file__, "--serve-sink", str(sink_port)],
        env=dict(os.environ),
        cwd=workdir,
        log_path=workdir / "sink.log",
        cpu=args.sink_cpu,
    )
    from hub.vapid import generate_vapid_keys

    env = {
        **os.environ,
        "NOTIFYHUB_DATABASE_URL": database_url(admin, name, "postgresql+asyncpg"),
        "NOTIFYHUB_REDIS_URL": args.redis_url,
        "NOTIFYHUB_SOCKETIO_CHANNEL": f"bench-outbox-{secrets.token_hex(4)}",
        "NOTIFYHUB_VAPID_PRIVATE_KEY": generate_vapid_keys().private_key,
        "NOTIFYHUB_PUSH_POLICY": "always",
        "NOTIFYHUB_PUSH_WORKER_CONCURRENCY": str(args.concurrency),
        "NOTIFYHUB_EMAIL_WORKER_CONCURRENCY": str(args.concurrency),
        "NOTIFYHUB_WEBHOOK_WORKER_CONCURRENCY": str(args.concurrency),
        # One endpoint per slot pair: the per-endpoint cap is not what is measured here.
        "NOTIFYHUB_WEBHOOK_ENDPOINT_CONCURRENCY": str(args.concurrency),
        "NOTIFYHUB_WEBHOOKS_ALLOW_PRIVATE": "true",
        "NOTIFYHUB_EMAIL_SWEEP_INTERVAL_SECONDS": "0.05",
        "NOTIFYHUB_LOG_LEVEL": "WARNING",
    }
    worker: subprocess.Popen[bytes] | None = None
    try:
        migrate(env, workdir)
        os.environ.update({k: v for k, v in env.items() if k.startswith("NOTIFYHUB_")})
        await prepare(args, env, f"http://{HOST}:{sink_port}")
        expected = args.notifications * (1 if args.kind == "push" else args.endpoints)
        dsn = asyncpg_dsn(env["NOTIFYHUB_DATABASE_URL"])
        worker = spawn_pinned(
            [sys.executable, "-m", "hub", "worker"],
            env=env,
            cwd=workdir,
            log_path=workdir / "worker.log",
            cpu=args.worker_cpu,
        )
        started = time.perf_counter()
        cpu_before = 0.0
        first_seen: float | None = None
        while True:
            done = await sent_count(dsn, TABLES[args.kind])
            if done and first_seen is None:
                first_seen = time.perf_counter()
                cpu_before = process_cpu_seconds(worker.pid)
                first_done = done
            if done >= expected:
                break
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(f"only {done} of {expected} sent in {args.timeout}s")
            await asyncio.sleep(0.05)
        finished = time.perf_counter()
        cpu = process_cpu_seconds(worker.pid) - cpu_before
        assert first_seen is not None
        window = finished - first_seen
        sent = expected - first_done
        return {
            "sends": expected,
            # From the first recorded send on: the worker's start-up is not send work.
            "sends_per_s": round(sent / window, 1),
            "worker_cpu_ms_per_send": round(1000 * cpu / max(1, sent), 3),
            "worker_cpu_share": round(cpu / window, 2),
        }
    finally:
        for process in (worker, sink):
            if process is not None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
        await drop_database(admin, name)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = [await measure_once(args, args.pg_admin_url) for _ in range(args.repeats)]
    return {
        "benchmark": f"outbox-{args.kind}",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(["pywebpush", "standardwebhooks", "aiohttp", "taskiq"]),
        "params": {
            "kind": args.kind,
            "notifications": args.notifications,
            "users": args.users,
            "endpoints": args.endpoints if args.kind == "webhook" else None,
            "concurrency": args.concurrency,
            "repeats": args.repeats,
        },
        "runs": runs,
        "median_sends_per_s": statistics.median(r["sends_per_s"] for r in runs),
    }


WHAT = {"push": "Web Push pushes", "webhook": "webhook deliveries"}


def markdown(results: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {i + 1} | {r['sends']:,} | {r['sends_per_s']:,.1f} "
        f"| {r['worker_cpu_ms_per_send']:.2f} | {r['worker_cpu_share']:.0%} |"
        for i, r in enumerate(results["runs"])
    )
    p = results["params"]
    setup = (
        f"{p['notifications']:,} notifications to {p['users']:,} users, one Web Push device each"
        if p["kind"] == "push"
        else f"{p['notifications']:,} notifications reported to {p['endpoints']} endpoints"
    )
    return (
        f"Run {results['at']}: {setup}, one worker (slots {p['concurrency']}), median "
        f"**{results['median_sends_per_s']:,.1f} {WHAT[p['kind']]}/s**.\n\n"
        "| run | sends | sends/s | worker CPU per send (ms) | worker core busy |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n"
    )


def update_doc(path: Path, section: str, kind: str) -> None:
    start, end = f"<!-- outbox-{kind}-results:start -->", f"<!-- outbox-{kind}-results:end -->"
    missing = (
        f"## {WHAT[kind].capitalize()}: `benchmarks/outbox.py --kind {kind}`\n\n"
        "One `notifyhub worker` (one core) sending to a local receiver (the other core).\n\n"
        f"```\n.venv/bin/python benchmarks/outbox.py --kind {kind}\n```\n\n{start}\n{end}\n"
    )
    replace_section(path, section, start=start, end=end, missing=missing, new_file="# Benchmarks\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--kind", choices=sorted(TABLES), default="push", help="what to send")
    parser.add_argument("--notifications", type=int, default=5000, help="notifications stored")
    parser.add_argument("--users", type=int, default=500, help="recipients (push: one device each)")
    parser.add_argument("--endpoints", type=int, default=4, help="webhook endpoints")
    parser.add_argument("--concurrency", type=int, default=50, help="worker slots")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run at most")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--worker-cpu", type=int, default=0)
    parser.add_argument("--sink-cpu", type=int, default=1)
    parser.add_argument(
        "--output", help="results JSON (default benchmarks/results/outbox-KIND.json)"
    )
    parser.add_argument("--quick", action="store_true", help="500 notifications, 1 run, no doc")
    parser.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    add_doc_options(parser, "markdown file to update", "rewrite its section for this kind")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_sink:
        asyncio.run(serve_receiver(args.serve_sink))
        return 0
    apply_quick(args, build_parser, {"notifications": 500, "users": 100, "repeats": 1})
    if args.update_doc is None:
        args.update_doc = not args.quick
    results = asyncio.run(run(args))
    suffix = "-quick" if args.quick else ""
    output = args.output or REPO / "benchmarks" / "results" / f"outbox-{args.kind}{suffix}.json"
    write_results(Path(output), results)
    section = markdown(results)
    print(section)
    update_doc_if_asked(args, lambda path, text: update_doc(path, text, args.kind), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
