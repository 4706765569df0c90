"""Presence at scale: one ``notifyhub serve`` process (pinned to one core, PostgreSQL and a
Redis of the script's own) with ``--users`` users connected to ``/chat`` (one socket each,
every user in one conversation with another, so each change of presence has a watcher),
then reconnect churn: every second ``--churn`` connected users leave and as many users who
left more than the grace period ago come back, for ``--seconds``; then the same at
``--max-churn`` per second, to find what the process sustains.

Measured, per phase: presence events the watching clients received per second (one
``online`` and one ``offline`` per churned user: the presence updates the hub made), the
server's CPU share (so updates per second at one full core follow), and the Redis commands
the hub sent per connect (from Redis's own ``INFO commandstats``, so nothing is estimated:
``evalsha`` is the presence store's one round trip per user transition, ``publish`` the
``presence`` emit to the peers' rooms, the rest heartbeats and sweeps). The first phase,
connecting every user once, gives the cost of a connect alone.

    .venv/bin/python benchmarks/presence.py --help
    .venv/bin/python benchmarks/presence.py --quick           # 1,000 users, 5 s phases
    .venv/bin/python benchmarks/presence.py --update-doc      # 10,000 users, docs/benchmarks.md
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
REPO = _HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks.cli import add_doc_options, add_quiet_options, apply_quick  # noqa: E402
from benchmarks.machine import (  # noqa: E402
    HOST,
    CpuWindow,
    code_version,
    free_port,
    machine_info,
    wait_for_quiet,
)
from benchmarks.private_hub import private_services  # noqa: E402
from benchmarks.processes import log_tail, pin, spawn_pinned  # noqa: E402
from benchmarks.report import replace_section, update_doc_if_asked, write_results  # noqa: E402
from benchmarks.socketio_client import (  # noqa: E402
    CLOSED_TYPES,
    engineio_url,
    join_namespace,
    stop_reading,
)
from hub.settings import Settings  # noqa: E402
from tests.harness.hub import settings_environment  # noqa: E402
from tests.harness.ports import wait_for_port_async  # noqa: E402
from tests.harness.tokens import hs256_token  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "presence.json"
TENANT = "bench-presence"
SERVER_CPU, CLIENT_CPU = 0, 1
PRESENCE_PREFIX = '42/chat,["presence",'
CONNECTS_IN_FLIGHT = 200
DOC_START, DOC_END = "<!-- presence-results:start -->", "<!-- presence-results:end -->"


@dataclass
class Counter:
    presence: int = 0


@dataclass
class User:
    name: str
    token: str
    ws: aiohttp.ClientWebSocketResponse | None = None
    reader: asyncio.Task[None] | None = None
    left_at: float = 0.0
    connected: bool = False
    counter: Counter = field(default_factory=Counter)


async def read(ws: aiohttp.ClientWebSocketResponse, counter: Counter) -> None:
    """Count ``presence`` events; answer pings so the server keeps the socket."""
    async for frame in ws:
        if frame.type in CLOSED_TYPES:
            return
        if frame.type is aiohttp.WSMsgType.TEXT:
            if frame.data.startswith(PRESENCE_PREFIX):
                counter.presence += 1
            elif frame.data == "2":
                await ws.send_str("3")


async def connect(http: aiohttp.ClientSession, url: str, user: User) -> None:
    ws = await http.ws_connect(url, autoping=False, max_msg_size=0)
    await join_namespace(ws, "/chat", user.token)
    user.ws, user.connected = ws, True
    user.reader = asyncio.create_task(read(ws, user.counter))


async def leave(user: User) -> None:
    user.connected = False
    user.left_at = time.monotonic()
    await stop_reading(user.reader, user.ws)
    user.ws = user.reader = None


async def befriend(database_url: str, users: list[User]) -> None:
    """Users 2k and 2k+1 share a conversation (set-based: 10,000 REST sends would take the
    setup longer than the measurement)."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    db = await asyncpg.connect(dsn)
    try:
        pairs = [(users[i].name, users[i + 1].name) for i in range(0, len(users) - 1, 2)]
        now = dt.datetime.now(dt.UTC)
        ids = await db.fetch(
            "INSERT INTO conversations (tenant_id, user_a, user_b, last_seq, created_at) "
            "SELECT $1, a, b, 0, $4 FROM unnest($2::text[], $3::text[]) AS p(a, b) RETURNING id",
            TENANT,
            [a for a, _ in pairs],
            [b for _, b in pairs],
            now,
        )
        members = []
        for row, (a, b) in zip(ids, pairs, strict=True):
            members += [(TENANT, row["id"], a, b, 0, 0, now), (TENANT, row["id"], b, a, 0, 0, now)]
        await db.copy_records_to_table(
            "conversation_members",
            records=members,
            columns=[
                "tenant_id",
                "conversation_id",
                "user_id",
                "peer_id",
                "last_read_seq",
                "unread_count",
                "last_activity_at",
            ],
        )
    finally:
        await db.close()


async def redis_commands(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after[name] - before.get(name, 0) for name in after}
    # INFO itself is the benchmark's own question, not the hub's.
    return {name: count for name, count in sorted(delta.items()) if count and name != "info"}


# Redis counts the commands a script or a MULTI pipeline runs inside it too; a round trip is
# an EVALSHA (the presence store's scripts), a MULTI ... EXEC pipeline (the heartbeat), a
# PUBLISH (an emit through python-socketio's manager) or any other command sent alone.
INSIDE_A_ROUND_TRIP = frozenset(
    {
        "sadd",
        "srem",
        "scard",
        "smembers",
        "del",
        "zrem",
        "hdel",
        "hget",
        "hset",
        "zadd",
        "zrangebyscore",
        "exec",
        "hello",
        "script|load",
        "client|setinfo",
    }
)


def round_trips(commands: dict[str, int]) -> int:
    return sum(count for name, count in commands.items() if name not in INSIDE_A_ROUND_TRIP)


async def phase_connect_all(
    http: aiohttp.ClientSession, url: str, users: list[User], redis: Redis, server_pid: int
) -> dict[str, Any]:
    before = await redis_commands(redis)
    window = CpuWindow.begin(server_pid)
    started = time.monotonic()
    slots = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def one(user: User) -> None:
        async with slots:
            await connect(http, url, user)

    await asyncio.gather(*(one(user) for user in users))
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)  # the last transitions' flush and emits
    cpu = window.end()
    commands = command_delta(before, await redis_commands(redis))
    return {
        "connects": len(users),
        "seconds": round(elapsed, 2),
        "connects_per_second": round(len(users) / elapsed),
        "server_cpu_seconds": round(cpu.processes[0], 2),
        "redis_commands": commands,
        "redis_round_trips_per_connect": round(round_trips(commands) / len(users), 3),
        "presence_store_round_trips_per_connect": round(commands.get("evalsha", 0) / len(users), 3),
        "presence_emits_per_connect": round(commands.get("publish", 0) / len(users), 3),
    }


async def phase_churn(
    http: aiohttp.ClientSession,
    url: str,
    users: list[User],
    redis: Redis,
    server_pid: int,
    *,
    rate: int,
    seconds: float,
    grace: float,
) -> dict[str, Any]:
    """``rate`` leaves and ``rate`` returns per second, in ticks of a tenth of a second."""
    rng = random.Random(rate)
    received_before = sum(u.counter.presence for u in users)
    before = await redis_commands(redis)
    window = CpuWindow.begin(server_pid)
    started = time.monotonic()
    tick, done, behind = 0.1, 0, 0.0
    left = returned = 0  # what really happened (fewer than due when nobody was eligible)
    while (now := time.monotonic()) - started < seconds:
        due = int((now - started) * rate) - done
        if due > 0:
            connected = [u for u in users if u.connected]
            returning = [u for u in users if not u.connected and now - u.left_at > grace * 1.5]
            leaving = rng.sample(connected, min(due, len(connected)))
            coming = rng.sample(returning, min(due, len(returning)))
            await asyncio.gather(
                *(leave(u) for u in leaving), *(connect(http, url, u) for u in coming)
            )
            done += due
            left += len(leaving)
            returned += len(coming)
        behind = max(behind, time.monotonic() - now)
        await asyncio.sleep(tick)
    elapsed = time.monotonic() - started
    await asyncio.sleep(grace + 1.5)  # the last offlines are due after the grace period
    cpu = window.end()
    commands = command_delta(before, await redis_commands(redis))
    received = sum(u.counter.presence for u in users) - received_before
    window_seconds = elapsed + grace + 1.5
    updates = commands.get("publish", 0)  # one emit per presence change (each has a peer)
    return {
        "target_churn_per_second": rate,
        "left": left,
        "returned": returned,
        "achieved_churn_per_second": round(left / elapsed),
        "longest_tick_seconds": round(behind, 3),
        "presence_updates": updates,
        "presence_updates_per_second": round(updates / window_seconds),
        "presence_events_received": received,
        "server_cpu_share": round(cpu.processes[0] / window_seconds, 3),
        "updates_per_second_per_full_core": round(updates / max(cpu.processes[0], 1e-9)),
        "cores_busy": round(cpu.busy / window_seconds, 2),
        "redis_commands": commands,
        "redis_round_trips_per_churned_user": round(round_trips(commands) / max(1, left), 3),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with private_services(
        args.database_url, presence_grace_seconds=args.grace, log_level="WARNING"
    ) as (settings, redis):
        return await scenario(args, settings, redis.url, Path(args.log_dir))


async def scenario(
    args: argparse.Namespace, settings: Settings, redis_url: str, logs: Path
) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, **settings_environment(settings)}
    log_path = logs / "serve.log"
    server = spawn_pinned(
        [sys.executable, "-m", "hub", "serve", "--host", HOST, "--port", str(port)],
        env=env,
        cwd=REPO,
        log_path=log_path,
        cpu=SERVER_CPU,
    )
    pin(CLIENT_CPU)
    quiet = await wait_for_quiet(args.quiet_threshold, args.quiet_timeout)
    users = [User(f"u{i}", hs256_token(tenant=TENANT, user=f"u{i}")) for i in range(args.users)]
    redis = Redis.from_url(redis_url)
    try:
        await wait_for_port_async(port, timeout=30)
        await befriend(settings.database_url, users)
        url = engineio_url(HOST, port)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            connected = await phase_connect_all(http, url, users, redis, server.pid)
            print(json.dumps({"connect": connected}), flush=True)
            phases = []
            for rate in (args.churn, args.max_churn):
                result = await phase_churn(
                    http,
                    url,
                    users,
                    redis,
                    server.pid,
                    rate=rate,
                    seconds=args.seconds,
                    grace=args.grace,
                )
                print(json.dumps({"churn": result}), flush=True)
                phases.append(result)
            await asyncio.gather(*(leave(u) for u in users if u.connected))
    except BaseException:
        print(log_tail(log_path))
        raise
    finally:
        await redis.aclose()
        server.terminate()
        server.wait(timeout=30)
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(["python-socketio", "redis", "aiohttp"]),
        "code": code_version(),
        "users": args.users,
        "grace_seconds": args.grace,
        "quiet_before": quiet,
        "connect": connected,
        "churn": phases,
    }


def doc_section(results: dict[str, Any]) -> str:
    connect = results["connect"]
    rows = [
        "| phase | churn/s achieved | presence updates/s | server CPU | updates/s per full "
        "core | Redis round trips per churned user | cores busy (machine) |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase in results["churn"]:
        rows.append(
            f"| churn {phase['target_churn_per_second']}/s | "
            f"{phase['achieved_churn_per_second']} | {phase['presence_updates_per_second']} | "
            f"{phase['server_cpu_share'] * 100:.0f}% | "
            f"{phase['updates_per_second_per_full_core']:,} | "
            f"{phase['redis_round_trips_per_churned_user']} | {phase['cores_busy']} |"
        )
    commands = ", ".join(f"`{name}` {count:,}" for name, count in connect["redis_commands"].items())
    quiet = results["quiet_before"]
    return (
        f"Measured {results['when']} on {results['machine']['cpu_model']} "
        f"({results['machine']['nproc']} cores; {quiet['busy_cores']} cores busy before the run), "
        f"{results['users']:,} users, grace {results['grace_seconds']} s, commit "
        f"`{(results['code'].get('commit') or '')[:10]}`.\n\n"
        f"Connecting all {connect['connects']:,} users: {connect['connects_per_second']:,} "
        f"connects/s; **{connect['redis_round_trips_per_connect']} Redis round trips per "
        f"connect**, of which {connect['presence_store_round_trips_per_connect']} to the "
        f"presence store (first sockets are batched) and {connect['presence_emits_per_connect']} "
        f"`presence` emits (Redis commands counted by Redis: {commands}).\n\n"
        + "\n".join(rows)
        + "\n"
    )


def update_doc(path: Path, section: str) -> None:
    replace_section(
        path,
        section,
        start=DOC_START,
        end=DOC_END,
        missing=f"## Presence: `benchmarks/presence.py`\n\n{DOC_START}\n{DOC_END}\n",
        new_file="# Benchmarks\n",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000, help="users, one socket each")
    parser.add_argument(
        "--churn", type=int, default=100, help="users leaving (and as many coming back) per second"
    )
    parser.add_argument(
        "--max-churn", type=int, default=1000, help="the churn of the saturation phase"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each churn phase")
    parser.add_argument(
        "--grace", type=float, default=1.0, help="NOTIFYHUB_PRESENCE_GRACE_SECONDS of the run"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 users, 5 s phases")
    parser.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="a server where the user may create databases (a fresh one is used)",
    )
    parser.add_argument(
        "--log-dir", default=str(Path(tempfile.gettempdir()) / "notifyhub-presence-bench")
    )
    parser.add_argument("--output", default=str(RESULTS))
    add_quiet_options(parser, threshold=0.3, timeout=60.0)
    add_doc_options(
        parser,
        "markdown file whose presence section --update-doc rewrites",
        "rewrite the presence section of --doc with these results",
    )
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    apply_quick(
        args,
        build_parser,
        {"users": 1000, "seconds": 5.0, "max_churn": 500, "quiet_timeout": 5.0},
    )
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    output = Path(args.output)
    if args.quick and args.output == str(RESULTS):
        output = RESULTS.with_name("presence-quick.json")
    write_results(output, results)
    print(f"results: {output}")
    update_doc_if_asked(args, update_doc, doc_section(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
