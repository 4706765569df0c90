"""Data export benchmark: ``GET /api/users/{id}/export/`` of a user with 100,000 notifications.

Everything runs on loopback against the local PostgreSQL: a fresh database (migrated with
Alembic, dropped at the end) is seeded with ``--notifications`` notifications of one user
(a 200-character body and a small ``data`` object each), ``--messages`` chat messages of a
conversation of theirs and ``--emails`` email records, then ANALYZE. One ``notifyhub serve``
process (Redis configured) answers; the client reads the export as it comes and throws it
away. Each of ``--runs`` exports is timed; the server's resident memory is sampled every 10 ms
from ``/proc`` during it, and its high-water mark (``VmHWM``) read before and after.
Finally the user is erased once (``DELETE /api/users/{id}/``) and that is timed too.

Reported: seconds and MB/s per export, the document's size, the server's RSS before and its
peak during the exports. Not a test: run it by hand.

    .venv/bin/python benchmarks/export.py --quick   # 10,000 notifications
    .venv/bin/python benchmarks/export.py           # 100,000: results + docs/benchmarks.md
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

SECRET = "export-benchmark-secret-0123456789-abcdef"  # noqa: S105 - a throwaway hub
TENANT = "bench"
USER = "u-export"
NOTIFYHUB = str(Path(sys.executable).with_name("notifyhub"))
START = "<!-- export-results:start -->"
END = "<!-- export-results:end -->"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="seconds and server peak RSS of GET /api/users/{id}/export/ for a user "
        "with many notifications"
    )
    parser.add_argument(
        "--admin-url",
        default=os.environ.get(
            "NOTIFYHUB_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL URL of a user who may create databases",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument(
        "--notifications", type=int, default=100_000, help="notifications of the user"
    )
    parser.add_argument("--messages", type=int, default=10_000, help="messages of one chat")
    parser.add_argument("--emails", type=int, default=1_000, help="email records of the user")
    parser.add_argument("--runs", type=int, default=3, help="exports measured")
    parser.add_argument(
        "--output",
        default=str(REPO / "benchmarks" / "results" / "export.json"),
        help="where the results JSON goes",
    )
    parser.add_argument("--quick", action="store_true", help="10,000 notifications, 2 runs")
    add_quiet_options(parser, threshold=0.5, timeout=120.0)
    add_doc_options(
        parser,
        "markdown file whose export section is rewritten",
        "rewrite the results section of --doc (default: on for full runs)",
    )
    return parser


def service_token() -> str:
    now = int(time.time())
    claims = {
        "sub": "crm-module",
        "tenant_id": TENANT,
        "roles": ["service"],
        "iat": now,
        "exp": now + 7200,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


SEED_NOTIFICATIONS = """
INSERT INTO notifications (tenant_id, user_id, seq, category, title, body, data, link,
                           created_at, read_at)
SELECT $1::text, $2::text, s, 'deals', 'Deal ' || s || ' won', repeat('x', 200),
       jsonb_build_object('deal_id', s), '/deals/' || s,
       now() - make_interval(secs => $3 - s), CASE WHEN s % 2 = 0 THEN now() END
FROM generate_series(1, $3::int) AS s
"""
SEED_COUNTER = """
INSERT INTO notification_counters (tenant_id, user_id, last_seq, unread_count, unseen_count)
SELECT $1::text, $2::text, $3, count(*) FILTER (WHERE read_at IS NULL), count(*)
FROM notifications WHERE tenant_id = $1::text AND user_id = $2::text
"""
SEED_CONVERSATION = """
WITH c AS (
    INSERT INTO conversations (tenant_id, user_a, user_b, last_seq, created_at)
    VALUES ($1::text, 'peer', $2::text, $3::int, now()) RETURNING id
), m AS (
    INSERT INTO conversation_members
        (tenant_id, conversation_id, user_id, peer_id, last_read_seq, unread_count,
         last_activity_at)
    SELECT $1::text, c.id, u.user_id, u.peer_id, $3::int, 0, now()
    FROM c, (VALUES ($2::text, 'peer'), ('peer', $2::text)) AS u(user_id, peer_id)
)
INSERT INTO messages (tenant_id, conversation_id, seq, sender_id, body, created_at)
SELECT $1::text, c.id, s, CASE WHEN s % 2 = 0 THEN $2::text ELSE 'peer' END,
       'message number ' || s, now()
FROM c, generate_series(1, $3::int) AS s
"""
SEED_EMAILS = """
INSERT INTO emails (id, tenant_id, to_email, user_id, category, subject, template_key, context,
                    status, attempts, created_at, updated_at, sent_at)
SELECT 'e' || s, $1::text, 'user@example.com', $2::text, 'deals', 'Your deal ' || s,
       'deal_won',
       jsonb_build_object('Name', 'Ann', 'Deal', s), 'sent', 1, now(), now(), now()
FROM generate_series(1, $3::int) AS s
"""


async def seed(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await connection.execute(SEED_NOTIFICATIONS, TENANT, USER, args.notifications)
        await connection.execute(SEED_COUNTER, TENANT, USER, args.notifications)
        if args.messages:
            await connection.execute(SEED_CONVERSATION, TENANT, USER, args.messages)
        if args.emails:
            await connection.execute(SEED_EMAILS, TENANT, USER, args.emails)
        await connection.execute("ANALYZE")
        return {
            "notifications": args.notifications,
            "messages": args.messages,
            "emails": args.emails,
            "seed_seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        await connection.close()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident) of a process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], memory_kib(pid)["VmRSS"])
        await asyncio.sleep(0.01)


async def export_once(url: str, token: str, pid: int) -> dict[str, Any]:
    stop = asyncio.Event()
    peak = [memory_kib(pid)["VmRSS"]]
    sampler = asyncio.create_task(sample_rss(pid, stop, peak))
    size = chunks = 0
    started = time.perf_counter()
    first_byte: float | None = None
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http,
        http.get(
            f"{url}/api/users/{USER}/export/", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        if response.status != 200:
            raise RuntimeError(f"export answered {response.status}: {await response.text()}")
        tail = b""
        async for chunk, _ in response.content.iter_chunks():
            if first_byte is None:
                first_byte = time.perf_counter() - started
            size += len(chunk)
            chunks += 1
            tail = (tail + chunk)[-2:]
    seconds = time.perf_counter() - started
    stop.set()
    await sampler
    if tail != b"]}":
        raise RuntimeError("the export did not end as a complete document")
    return {
        "seconds": round(seconds, 2),
        "first_byte_ms": round((first_byte or 0) * 1000, 1),
        "bytes": size,
        "chunks": chunks,
        "mb_per_second": round(size / seconds / 1e6, 1),
        "server_peak_rss_mib": round(peak[0] / 1024, 1),
    }


def hub_environment(db_url: str, args: argparse.Namespace) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFYHUB_")},
        "NOTIFYHUB_ENV": "test",
        "NOTIFYHUB_DATABASE_URL": db_url,
        "NOTIFYHUB_REDIS_URL": args.redis_url,
        "NOTIFYHUB_SOCKETIO_CHANNEL": f"export-bench-{uuid.uuid4().hex[:8]}",
        "NOTIFYHUB_JWT_SECRET": SECRET,
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
    name = f"notifyhub_export_{uuid.uuid4().hex[:8]}"
    await create_database(args.admin_url, name)
    db_url = database_url(args.admin_url, name, "postgresql+asyncpg")
    serve: asyncio.subprocess.Process | None = None
    try:
        await asyncio.to_thread(upgrade_to_head, db_url)
        seeded = await seed(asyncpg_dsn(db_url), args)
        print(f"seeded {seeded}")
        port = free_port()
        serve = await asyncio.create_subprocess_exec(
            NOTIFYHUB,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=hub_environment(db_url, args),
        )
        url = f"http://127.0.0.1:{port}"
        await wait_for_http(url)
        token = service_token()
        # A first small request warms the pool and the routes; the RSS baseline is after it.
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{url}/api/users/nobody/export/", headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            await response.read()
        before = memory_kib(serve.pid)
        quiet = await wait_for_quiet(args.quiet_threshold, args.quiet_timeout)
        print(f"machine before measuring: {quiet}")
        runs = []
        for n in range(args.runs):
            run = await export_once(url, token, serve.pid)
            print(f"run {n + 1}: {run}")
            runs.append(run)
        after = memory_kib(serve.pid)
        started = time.perf_counter()
        async with (
            aiohttp.ClientSession() as http,
            http.delete(
                f"{url}/api/users/{USER}/", headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            erased = await response.json()
        erase_seconds = time.perf_counter() - started
        return {
            "seeded": seeded,
            "quiet_before": quiet,
            "runs": runs,
            "median_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
            "document_bytes": runs[0]["bytes"],
            "server_rss_before_mib": round(before["VmRSS"] / 1024, 1),
            "server_peak_rss_mib": round(max(r["server_peak_rss_mib"] for r in runs), 1),
            "server_hwm_before_mib": round(before["VmHWM"] / 1024, 1),
            "server_hwm_after_mib": round(after["VmHWM"] / 1024, 1),
            "erase": {"seconds": round(erase_seconds, 2), "answer": erased},
        }
    finally:
        if serve is not None:
            serve.terminate()
            await asyncio.wait_for(serve.wait(), 15)
        await drop_database(args.admin_url, name)


def section(results: dict[str, Any]) -> str:
    seeded = results["seeded"]
    rows = "".join(
        f"| {n} | {r['seconds']} s | {r['first_byte_ms']} ms | {r['mb_per_second']} MB/s | "
        f"{r['chunks']:,} | {r['server_peak_rss_mib']} MiB |\n"
        for n, r in enumerate(results["runs"], 1)
    )
    growth = round(results["server_peak_rss_mib"] - results["server_rss_before_mib"], 1)
    return (
        f"A user with {seeded['notifications']:,} notifications, {seeded['messages']:,} chat "
        f"messages and {seeded['emails']:,} emails: a document of "
        f"{results['document_bytes'] / 1e6:.1f} MB, median **{results['median_seconds']} s** "
        f"per export; server RSS {results['server_rss_before_mib']} MiB before, at most "
        f"**{results['server_peak_rss_mib']} MiB** during (+{growth} MiB).\n\n"
        "| run | seconds | first byte | throughput | chunks | server peak RSS |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        f"{rows}\n"
        f"Erasing that user afterwards (one transaction) took {results['erase']['seconds']} s: "
        f"`{results['erase']['answer']}`.\n"
    )


def update_doc(path: Path, text: str) -> None:
    replace_section(
        path,
        text,
        start=START,
        end=END,
        missing=f"## User data export: `benchmarks/export.py`\n\n{START}\n{END}\n",
        new_file="# Benchmarks\n",
    )


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    apply_quick(
        args, build_parser, {"notifications": 10_000, "messages": 1_000, "emails": 100, "runs": 2}
    )
    if args.update_doc is None:
        args.update_doc = not args.quick
    results = asyncio.run(measure(args))
    results["machine"] = machine_info(["sqlalchemy", "asyncpg", "aiohttp", "orjson"])
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
