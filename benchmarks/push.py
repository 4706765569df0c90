"""Push throughput: Web Push deliveries per second one ``notifyhub worker`` sends.

The run stores ``--notifications`` notifications for users who each have one Web Push
device (through ``NotificationService``, so every push delivery is recorded and its task
queued as in production), then starts one worker process pinned to one core and times how
long it takes until every delivery is ``sent``. The push service is a local aiohttp server
(another process, the other core) that answers 201 to every request; a sample of the
requests is decrypted with the subscription's key to check what was sent. Each push costs
the worker: claim (one UPDATE), ECDH + HKDF + AES-GCM encryption (RFC 8291), the HTTP
request, and recording the outcome (one UPDATE).

    .venv/bin/python benchmarks/push.py --quick   # smoke run: 500 pushes
    .venv/bin/python benchmarks/push.py           # full run: writes results + docs
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
DOC_START = "<!-- push-results:start -->"
DOC_END = "<!-- push-results:end -->"


async def serve_push_service(port: int) -> None:
    """The stand-in push service (``--serve-sink``): 201 to everything, counts requests."""
    count = 0

    async def accept(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/wp/{name}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=1024).start()
    await asyncio.Event().wait()


async def prepare(env: dict[str, str], users: int, notifications: int, sink: str) -> None:
    """Devices for ``users`` users, then ``notifications`` notifications spread over them,
    stored and kicked by the hub's own services."""
    # Imported here: the settings come from ``env``, set just before.
    from db.engine import engine_for, make_session_factory
    from hub.delivery.bus import LocalBus
    from hub.rules import NewNotification, NotificationLimits
    from hub.services.devices import DeviceService
    from hub.services.notifications import NotificationService
    from hub.services.pushes import PushService
    from hub.settings import Settings
    from tasks.broker import build_broker
    from tasks.push import TaskiqPushQueue
    from tests.harness.push import BrowserSubscription

    settings = Settings(
        _env_file=None, **{k[10:].lower(): v for k, v in env.items() if k.startswith("NOTIFYHUB_")}
    )  # type: ignore[arg-type]
    engine = engine_for(settings)
    sessions = make_session_factory(engine)
    broker = build_broker(settings)
    await broker.startup()
    try:
        devices = DeviceService(sessions=sessions)
        for user in range(users):
            subscription = BrowserSubscription(f"{sink}/wp/u{user}").as_json()
            await devices.register(
                tenant_id="bench",
                user_id=f"u{user}",
                kind="webpush",
                token=subscription["endpoint"],
                keys=subscription["keys"],
            )
        service = NotificationService(
            sessions=sessions,
            bus=LocalBus(),
            limits=NotificationLimits(),
            pushes=PushService(
                queue=TaskiqPushQueue(broker), sessions=sessions, sweep_after_seconds=600
            ),
        )
        per_batch = users
        for start in range(0, notifications, per_batch):
            count = min(per_batch, notifications - start)
            await service.create(
                tenant_id="bench",
                user_ids=[f"u{i}" for i in range(count)],
                notification=NewNotification(
                    title="Deal won", body="ACME renewed", category="deals"
                ),
            )
    finally:
        await broker.shutdown()
        await engine.dispose()


async def sent_count(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM push_deliveries WHERE status = 'sent'")
        )
    finally:
        await connection.close()


async def measure_once(args: argparse.Namespace, admin: str) -> dict[str, Any]:
    name = f"notifyhub_push_{secrets.token_hex(4)}"
    await create_database(admin, name)
    workdir = Path(tempfile.mkdtemp(prefix="notifyhub-push-"))
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
        "NOTIFYHUB_SOCKETIO_CHANNEL": f"bench-push-{secrets.token_hex(4)}",
        "NOTIFYHUB_VAPID_PRIVATE_KEY": generate_vapid_keys().private_key,
        "NOTIFYHUB_PUSH_POLICY": "always",
        "NOTIFYHUB_PUSH_WORKER_CONCURRENCY": str(args.concurrency),
        "NOTIFYHUB_EMAIL_WORKER_CONCURRENCY": str(args.concurrency),
        "NOTIFYHUB_LOG_LEVEL": "WARNING",
    }
    worker: subprocess.Popen[bytes] | None = None
    try:
        migrate(env, workdir)
        os.environ.update({k: v for k, v in env.items() if k.startswith("NOTIFYHUB_")})
        await prepare(env, args.users, args.notifications, f"http://{HOST}:{sink_port}")
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
            done = await sent_count(dsn)
            if done and first_seen is None:
                first_seen = time.perf_counter()
                cpu_before = process_cpu_seconds(worker.pid)
                first_done = done
            if done >= args.notifications:
                break
            if time.perf_counter() - started > args.timeout:
                raise SystemExit(
                    f"only {done} of {args.notifications} pushes sent in {args.timeout}s"
                )
            await asyncio.sleep(0.05)
        finished = time.perf_counter()
        cpu = process_cpu_seconds(worker.pid) - cpu_before
        assert first_seen is not None
        window = finished - first_seen
        pushed = args.notifications - first_done
        return {
            "pushes": args.notifications,
            # From the first recorded push on: the worker's start-up is not push work.
            "pushes_per_s": round(pushed / window, 1),
            "worker_cpu_ms_per_push": round(1000 * cpu / max(1, pushed), 3),
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
    median = statistics.median(r["pushes_per_s"] for r in runs)
    return {
        "benchmark": "push",
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(["pywebpush", "http-ece", "aiohttp", "taskiq"]),
        "params": {
            "notifications": args.notifications,
            "users": args.users,
            "concurrency": args.concurrency,
            "repeats": args.repeats,
        },
        "runs": runs,
        "median_pushes_per_s": median,
    }


def markdown(results: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {i + 1} | {r['pushes']:,} | {r['pushes_per_s']:,.1f} "
        f"| {r['worker_cpu_ms_per_push']:.2f} | {r['worker_cpu_share']:.0%} |"
        for i, r in enumerate(results["runs"])
    )
    p = results["params"]
    return (
        f"Run {results['at']}: {p['notifications']:,} notifications to {p['users']:,} users with "
        f"one Web Push device each, one worker (task and sweeper slots {p['concurrency']}), "
        f"median **{results['median_pushes_per_s']:,.1f} pushes/s**.\n\n"
        "| run | pushes | pushes/s | worker CPU per push (ms) | worker core busy |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n"
    )


def update_doc(path: Path, section: str) -> None:
    missing = (
        "## Push: `benchmarks/push.py`\n\n"
        "One `notifyhub worker` (one core) sending Web Push to a local push service (the "
        "other core).\n\n```\n.venv/bin/python benchmarks/push.py --quick\n"
        ".venv/bin/python benchmarks/push.py\n```\n\n"
        f"{DOC_START}\n{DOC_END}\n"
    )
    replace_section(
        path, section, start=DOC_START, end=DOC_END, missing=missing, new_file="# Benchmarks\n"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--notifications", type=int, default=5000, help="pushes to send")
    parser.add_argument("--users", type=int, default=500, help="users (one device each)")
    parser.add_argument("--concurrency", type=int, default=50, help="worker task slots")
    parser.add_argument("--repeats", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run at most")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--worker-cpu", type=int, default=0)
    parser.add_argument("--sink-cpu", type=int, default=1)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "push.json"))
    parser.add_argument("--quick", action="store_true", help="500 pushes, 1 run, no doc update")
    parser.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    add_doc_options(parser, "markdown file to update", "rewrite its push section")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_sink:
        asyncio.run(serve_push_service(args.serve_sink))
        return 0
    apply_quick(args, build_parser, {"notifications": 500, "users": 100, "repeats": 1})
    if args.update_doc is None:
        args.update_doc = not args.quick
    results = asyncio.run(run(args))
    if args.quick:
        args.output = str(Path(args.output).with_name("push-quick.json"))
    write_results(Path(args.output), results)
    section = markdown(results)
    print(section)
    update_doc_if_asked(args, update_doc, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
