"""Retention purge benchmark: list latency while ``notifyhub purge`` deletes a million rows.

Everything runs on loopback against the local PostgreSQL and Redis: a fresh database
(migrated with Alembic, dropped at the end) is seeded with ``--users`` users of one tenant,
each with ``--old-per-user`` notifications created 400 days ago (past the default 365-day
retention: what the purge deletes; half of them unread, a third archived) and
``--live-per-user`` recent ones (what the lists show), counters set exactly; then ANALYZE.
One ``notifyhub serve`` process (Redis configured, so it does not purge by itself) answers
``--clients`` concurrent clients that each loop ``GET /api/notifications/?limit=20`` for a
random user:

1. baseline: ``--baseline-seconds`` of list requests, no purge;
2. during: the same load while ``notifyhub purge`` (its own process: batches of
   ``NOTIFYHUB_PURGE_BATCH_ROWS``, ``NOTIFYHUB_PURGE_PAUSE_SECONDS`` apart) deletes every old
   row; the window is the purge process's lifetime.

Reported: p50, p99 and max of the list requests in each window, requests/s, the purge's
duration and rows/s. Afterwards every user's stored counters are compared with a scan of
its rows (they must be equal) and the old rows must be gone. Not a test: run it by hand.

    .venv/bin/python benchmarks/purge.py --quick    # 100,000 rows to purge
    .venv/bin/python benchmarks/purge.py            # 1,000,000 rows: results + docs
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import jwt  # noqa: E402

from benchmarks.cli import add_doc_options, add_quiet_options, apply_quick  # noqa: E402
from benchmarks.database import asyncpg_dsn, create_database, database_url, drop_database  # noqa: E402
from benchmarks.machine import free_port, machine_info, wait_for_quiet  # noqa: E402
from benchmarks.report import replace_section, update_doc_if_asked, write_results  # noqa: E402
from db.migrate import upgrade_to_head  # noqa: E402

SECRET = "purge-benchmark-secret-0123456789-abcdef"  # noqa: S105 - a throwaway hub
TENANT = "bench"
NOTIFYHUB = str(Path(sys.executable).with_name("notifyhub"))
START = "<!-- purge-results:start -->"
END = "<!-- purge-results:end -->"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="p50/p99 of GET /api/notifications/ before and during a purge of old rows"
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "NOTIFYHUB_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL URL of a user who may create databases",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--users", type=int, default=1000, help="users of the tenant")
    parser.add_argument(
        "--old-per-user", type=int, default=1000, help="old notifications per user (purged)"
    )
    parser.add_argument(
        "--live-per-user", type=int, default=50, help="recent notifications per user (kept)"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent list clients")
    parser.add_argument("--baseline-seconds", type=float, default=15.0, help="baseline window")
    parser.add_argument("--batch-rows", type=int, default=5000, help="rows per purge batch")
    parser.add_argument(
        "--pause-seconds", type=float, default=0.05, help="pause between purge batches"
    )
    parser.add_argument(
        "--output",
        default=str(REPO / "benchmarks" / "results" / "purge.json"),
        help="where the results JSON goes",
    )
    parser.add_argument("--quick", action="store_true", help="100 old rows per user, 5 s baseline")
    add_quiet_options(parser, threshold=0.5, timeout=120.0)
    add_doc_options(
        parser,
        "markdown file whose purge section is rewritten",
        "rewrite the results section of --doc (default: on for full runs)",
    )
    return parser


def token(user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "tenant_id": TENANT, "roles": [], "iat": now, "exp": now + 7200}
    return jwt.encode(claims, SECRET, algorithm="HS256")


SEED = """
INSERT INTO notifications (tenant_id, user_id, seq, category, title, body, data, link,
                           created_at, read_at, seen_at, archived_at)
SELECT $1, 'u' || u, s, 'bench', 'n' || s, 'body', '{}'::jsonb, NULL,
       CASE WHEN s <= $4 THEN now() - interval '400 days'
            ELSE now() - make_interval(secs => $5 - s) END,
       CASE WHEN s % 2 = 0 THEN now() END,
       CASE WHEN s % 2 = 0 OR s % 5 = 0 THEN now() END,
       CASE WHEN s % 3 = 0 AND s <= $4 THEN now() END
FROM generate_series($2::int, $3::int) AS u, generate_series(1, $5::int) AS s
"""
COUNTERS = """
INSERT INTO notification_counters (tenant_id, user_id, last_seq, unread_count, unseen_count)
SELECT tenant_id, user_id, max(seq),
       count(*) FILTER (WHERE read_at IS NULL AND archived_at IS NULL),
       count(*) FILTER (WHERE seen_at IS NULL AND archived_at IS NULL)
FROM notifications WHERE tenant_id = $1 GROUP BY tenant_id, user_id
"""
CHECK = """
SELECT count(*) FROM notification_counters AS c
LEFT JOIN (
    SELECT user_id,
           count(*) FILTER (WHERE read_at IS NULL AND archived_at IS NULL) AS unread,
           count(*) FILTER (WHERE seen_at IS NULL AND archived_at IS NULL) AS unseen
    FROM notifications WHERE tenant_id = $1 GROUP BY user_id
) AS t ON t.user_id = c.user_id
WHERE c.tenant_id = $1
  AND (c.unread_count <> coalesce(t.unread, 0) OR c.unseen_count <> coalesce(t.unseen, 0))
"""


async def seed(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        total = args.old_per_user + args.live_per_user
        # One user at a time would be slow; chunks of users keep each statement bounded.
        chunk = max(1, 200_000 // total)
        for first in range(0, args.users, chunk):
            count = min(chunk, args.users - first)
            await connection.execute(
                SEED, TENANT, first, first + count - 1, args.old_per_user, total
            )
        await connection.execute(COUNTERS, TENANT)
        await connection.execute("ANALYZE")
        rows = await connection.fetchval("SELECT count(*) FROM notifications")
        old = await connection.fetchval(
            "SELECT count(*) FROM notifications WHERE created_at < now() - interval '365 days'"
        )
        return {
            "rows": rows,
            "old_rows": old,
            "seed_seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        await connection.close()


class Load:
    """``clients`` loops of list requests; latencies kept with their end time."""

    def __init__(self, url: str, users: int, clients: int) -> None:
        self.url = url
        self.tokens = [token(f"u{i}") for i in range(users)]
        self.clients = clients
        self.samples: list[tuple[float, float]] = []  # (end time, seconds)
        self.errors = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(self._client(http, n) for n in range(self.clients)))

    async def _client(self, http: aiohttp.ClientSession, n: int) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            headers = {"Authorization": f"Bearer {rng.choice(self.tokens)}"}
            started = time.perf_counter()
            async with http.get(f"{self.url}/api/notifications/?limit=20", headers=headers) as r:
                await r.read()
                ok = r.status == 200
            ended = time.perf_counter()
            if ok:
                self.samples.append((ended, ended - started))
            else:
                self.errors += 1

    def window(self, start: float, end: float) -> dict[str, Any]:
        values = sorted(s for t, s in self.samples if start <= t <= end)
        if not values:
            return {"requests": 0}
        return {
            "requests": len(values),
            "per_second": round(len(values) / (end - start), 1),
            "p50_ms": round(values[len(values) // 2] * 1000, 2),
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 2),
            "max_ms": round(values[-1] * 1000, 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2),
        }


def hub_environment(db_url: str, args: argparse.Namespace) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFYHUB_")},
        "NOTIFYHUB_ENV": "test",
        "NOTIFYHUB_DATABASE_URL": db_url,
        "NOTIFYHUB_REDIS_URL": args.redis_url,
        "NOTIFYHUB_SOCKETIO_CHANNEL": f"purge-bench-{uuid.uuid4().hex[:8]}",
        "NOTIFYHUB_JWT_SECRET": SECRET,
        "NOTIFYHUB_PURGE_BATCH_ROWS": str(args.batch_rows),
        "NOTIFYHUB_PURGE_PAUSE_SECONDS": str(args.pause_seconds),
        "NOTIFYHUB_LOG_LEVEL": "WARNING",
    }


async def wait_for_http(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("notifyhub serve did not come up")
            await asyncio.sleep(0.2)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    name = f"notifyhub_purge_{uuid.uuid4().hex[:8]}"
    await create_database(args.admin_url, name)
    db_url = database_url(args.admin_url, name, "postgresql+asyncpg")
    serve: asyncio.subprocess.Process | None = None
    try:
        await asyncio.to_thread(upgrade_to_head, db_url)
        seeded = await seed(asyncpg_dsn(db_url), args)
        print(f"seeded {seeded}")
        env = hub_environment(db_url, args)
        port = free_port()
        serve = await asyncio.create_subprocess_exec(
            NOTIFYHUB, "serve", "--host", "127.0.0.1", "--port", str(port), env=env
        )
        url = f"http://127.0.0.1:{port}"
        await wait_for_http(url)
        # Other jobs on this 2-core machine skew both windows: start on a quiet machine.
        quiet = await wait_for_quiet(args.quiet_threshold, args.quiet_timeout)
        print(f"machine before measuring: {quiet}")
        load = Load(url, args.users, args.clients)
        running = asyncio.create_task(load.run())
        await asyncio.sleep(2.0)  # warm-up, not counted
        base_start = time.perf_counter()
        await asyncio.sleep(args.baseline_seconds)
        base_end = purge_start = time.perf_counter()
        purge = await asyncio.create_subprocess_exec(
            NOTIFYHUB, "purge", env=env, stdout=asyncio.subprocess.PIPE
        )
        output, _ = await purge.communicate()
        purge_end = time.perf_counter()
        load.stop.set()
        await running
        if purge.returncode != 0:
            raise RuntimeError(f"notifyhub purge exited {purge.returncode}")
        connection = await asyncpg.connect(asyncpg_dsn(db_url))
        try:
            wrong = await connection.fetchval(CHECK, TENANT)
            left_old = await connection.fetchval(
                "SELECT count(*) FROM notifications WHERE created_at < now() - interval '365 days'"
            )
            left = await connection.fetchval("SELECT count(*) FROM notifications")
        finally:
            await connection.close()
        seconds = purge_end - purge_start
        return {
            "seeded": seeded,
            "quiet_before": quiet,
            "users": args.users,
            "clients": args.clients,
            "batch_rows": args.batch_rows,
            "pause_seconds": args.pause_seconds,
            "baseline": load.window(base_start, base_end),
            "during_purge": load.window(purge_start, purge_end),
            "purge": {
                "seconds": round(seconds, 1),
                "rows_per_second": round(seeded["old_rows"] / seconds),
                "output": output.decode().strip(),
            },
            "request_errors": load.errors,
            "after": {
                "rows_left": left,
                "old_rows_left": left_old,
                "users_with_wrong_counters": wrong,
            },
        }
    finally:
        if serve is not None:
            serve.terminate()
            await asyncio.wait_for(serve.wait(), 15)
        await drop_database(args.admin_url, name)


def section(results: dict[str, Any]) -> str:
    base, during, purge = results["baseline"], results["during_purge"], results["purge"]
    seeded, after = results["seeded"], results["after"]
    return (
        f"{seeded['old_rows']:,} old rows purged out of {seeded['rows']:,} "
        f"({results['users']:,} users; {results['clients']} list clients; batches of "
        f"{results['batch_rows']:,} rows, each followed by a pause as long as it took, at "
        f"least {results['pause_seconds']} s):\n\n"
        "| window | list requests/s | p50 | p99 | max |\n"
        "|---|---:|---:|---:|---:|\n"
        f"| baseline (no purge) | {base['per_second']} | {base['p50_ms']} ms | "
        f"{base['p99_ms']} ms | {base['max_ms']} ms |\n"
        f"| during the purge | {during['per_second']} | {during['p50_ms']} ms | "
        f"{during['p99_ms']} ms | {during['max_ms']} ms |\n\n"
        f"The purge took {purge['seconds']} s ({purge['rows_per_second']:,} rows/s); "
        f"request errors: {results['request_errors']}; afterwards {after['old_rows_left']} old "
        f"rows left and {after['users_with_wrong_counters']} users whose stored counters "
        "differ from a scan of their rows.\n"
    )


def update_doc(path: Path, text: str) -> None:
    replace_section(
        path,
        text,
        start=START,
        end=END,
        missing=f"## Retention purge: `benchmarks/purge.py`\n\n{START}\n{END}\n",
        new_file="# Benchmarks\n",
    )


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    apply_quick(args, build_parser, {"old_per_user": 100, "baseline_seconds": 5.0})
    if args.update_doc is None:
        args.update_doc = not args.quick
    results = asyncio.run(measure(args))
    results["machine"] = machine_info(["sqlalchemy", "asyncpg", "aiohttp"])
    results["quick"] = args.quick
    text = section(results)
    print(text)
    output = Path(args.output)
    if args.quick:
        output = output.with_name(output.stem + "-quick.json")
    write_results(output, results)
    update_doc_if_asked(args, update_doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
