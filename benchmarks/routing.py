"""Scale-out routing: what a ``serve`` node pays for traffic that is not its own.

K ``notifyhub serve`` processes (K = ``--nodes``, 1,2,4,6 by default) on one PostgreSQL
database and one Redis of the script's own; ``--users`` users, each with one
``/notifications`` and one ``/chat`` socket, either all on node 1 (layout ``one``) or spread
evenly over the K nodes (layout ``spread``). Then, through node 1's REST API:

1. ``--rounds`` rounds of one notification to every user (``POST /api/notifications/``,
   ``--batch`` users per request, ``--concurrency`` requests at a time), each round waited
   for until every socket has it;
2. ``--chat-messages`` chat messages between pairs of users (``POST /api/messages/send/``,
   ``--concurrency`` at a time), waited for until both participants' sockets have each.

Measured per phase: the CPU time of every node (all threads, from
``/proc/<pid>/task/*/schedstat``), less what the node burns idle (its rate over
``--idle-seconds`` measured just before, times the phase's length), divided by the
notifications (or messages) of the phase: for layout ``one``, the nodes other than node 1
hold no socket, so their figure is the cost of traffic that is not theirs. And Redis's
``INFO stats`` ``total_net_output_bytes`` over the phase, per notification (per message):
what Redis sends to everyone (publishers' replies included).

``--hub-dir`` runs another checkout's hub (e.g. ``/work/main``) with the same load, for a
before/after on the same machine. Not a test: run it by hand.

    .venv/bin/python benchmarks/routing.py --help
    .venv/bin/python benchmarks/routing.py --quick              # 100 users, K = 1, 2
    .venv/bin/python benchmarks/routing.py --update-doc         # the full run, docs/benchmarks.md
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
import contextlib  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from benchmarks.cli import add_doc_options, apply_quick  # noqa: E402
from benchmarks.machine import (  # noqa: E402
    HOST,
    code_version,
    free_port,
    machine_info,
)
from benchmarks.private_hub import private_services  # noqa: E402
from benchmarks.processes import log_tail, spawn_pinned  # noqa: E402
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

TENANT = "bench-routing"
RESULTS = REPO / "benchmarks" / "results" / "routing.json"
DOC_START, DOC_END = "<!-- routing-results:start -->", "<!-- routing-results:end -->"
NEW_FRAME = '42/notifications,["notification:new"'
MESSAGE_FRAME = '42/chat,["message:new"'
# Main's figures (issue 19: 99c0a6c, 600 users on node 1, 2-core machine), per unit.
BEFORE = {
    2: {"notification_us": 62, "message_us": 444, "out_n": 672, "out_m": 1728},
    4: {"notification_us": 60, "message_us": 387, "out_n": 1343, "out_m": 3440},
    6: {"notification_us": 56, "message_us": 388, "out_n": 2014, "out_m": 5158},
}


@dataclass
class Socket:
    ws: aiohttp.ClientWebSocketResponse
    reader: asyncio.Task[None]


async def open_socket(
    http: aiohttp.ClientSession, port: int, namespace: str, token: str, counts: Counter[str]
) -> Socket:
    ws = await http.ws_connect(engineio_url(HOST, port), compress=0, max_msg_size=0)
    await join_namespace(ws, namespace, token)

    async def read() -> None:
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                frame: str = message.data
                if frame == "2":
                    await ws.send_str("3")
                elif frame.startswith(NEW_FRAME):
                    counts["new"] += 1
                elif frame.startswith(MESSAGE_FRAME):
                    counts["message"] += 1
            elif message.type in CLOSED_TYPES:
                counts["closed"] += 1
                return

    return Socket(ws, asyncio.create_task(read()))


async def wait_until(check: Any, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done in {limit} s")
        await asyncio.sleep(0.01)


async def output_bytes(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_net_output_bytes"])


def cpu(pids: list[int]) -> list[float]:
    return [process_cpu_seconds(pid) for pid in pids]


def process_cpu_seconds(pid: int) -> float:
    """Time on CPU of all the process's threads, from /proc/<pid>/task/*/schedstat: in
    nanoseconds, where /proc/<pid>/stat counts 10 ms ticks (one tick over 720 messages would
    be 14 us per message, the size of what is measured)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def idle_rates(pids: list[int], seconds: float) -> list[float]:
    """Each process's CPU seconds per second while nothing is sent (its timers, lag checks)."""
    before = cpu(pids)
    await asyncio.sleep(seconds)
    return [(a - b) / seconds for a, b in zip(cpu(pids), before, strict=True)]


class Cluster:
    """K serve processes of one hub, started from ``hub_dir``."""

    def __init__(self, settings: Settings, k: int, hub_dir: Path, logs: Path) -> None:
        env = {**os.environ, **settings_environment(settings)}
        self.ports = [free_port() for _ in range(k)]
        self.logs = [logs / f"serve-{k}-{i}.log" for i in range(k)]
        self.processes: list[subprocess.Popen[bytes]] = [
            spawn_pinned(
                [sys.executable, "-m", "hub", "serve", "--host", HOST, "--port", str(port)],
                env=env,
                cwd=hub_dir,
                log_path=log,
                cpu=None,
            )
            for port, log in zip(self.ports, self.logs, strict=True)
        ]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def ready(self) -> None:
        for port in self.ports:
            await wait_for_port_async(port, timeout=60)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def measure(
    *,
    pids: list[int],
    redis: Redis,
    idle_rates: list[float],
    units: int,
    work: Any,
) -> dict[str, Any]:
    """Run ``work()`` and return CPU per unit per node (less idle) and Redis output per unit."""
    before_cpu, before_out = cpu(pids), await output_bytes(redis)
    started = time.monotonic()
    await work()
    elapsed = time.monotonic() - started
    after_cpu, after_out = cpu(pids), await output_bytes(redis)
    # Not clamped at 0: a node that does nothing measures a little above or below its idle
    # rate, and both show how close to nothing it is.
    per_node = [
        ((a - b) - rate * elapsed) / units * 1e6
        for a, b, rate in zip(after_cpu, before_cpu, idle_rates, strict=True)
    ]
    raw = [(a - b) / units * 1e6 for a, b in zip(after_cpu, before_cpu, strict=True)]
    return {
        "units": units,
        "seconds": round(elapsed, 3),
        "cpu_us_per_unit_by_node": [round(x, 2) for x in per_node],
        "raw_cpu_us_per_unit_by_node": [round(x, 2) for x in raw],
        "redis_output_bytes_per_unit": round((after_out - before_out) / units, 1),
    }


async def scenario(  # noqa: PLR0915 - one run, start to finish, reads best in one piece
    args: argparse.Namespace, settings: Settings, redis_url: str, k: int, layout: str
) -> dict[str, Any]:
    logs = Path(args.log_dir)
    cluster = Cluster(settings, k, Path(args.hub_dir), logs)
    redis = Redis.from_url(redis_url)
    counts: Counter[str] = Counter()
    sockets: list[Socket] = []
    users = [f"u{i}" for i in range(args.users)]
    try:
        await cluster.ready()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            gate = asyncio.Semaphore(50)

            async def connect(index: int, user: str) -> None:
                port = cluster.ports[0 if layout == "one" else index % k]
                token = hs256_token(tenant=TENANT, user=user, ttl=3600)
                async with gate:
                    for namespace in ("/notifications", "/chat"):
                        sockets.append(await open_socket(http, port, namespace, token, counts))

            await asyncio.gather(*(connect(i, u) for i, u in enumerate(users)))
            api = f"http://{HOST}:{cluster.ports[0]}"
            service = {
                "Authorization": "Bearer "
                + hs256_token(tenant=TENANT, user="crm", roles=["service"], ttl=3600)
            }

            async def notify_rounds(rounds: int) -> None:
                lanes = asyncio.Semaphore(args.concurrency)
                batches = [users[i : i + args.batch] for i in range(0, len(users), args.batch)]

                async def post(batch: list[str]) -> None:
                    async with (
                        lanes,
                        http.post(
                            f"{api}/api/notifications/",
                            json={"user_ids": batch, "title": "t", "body": "b"},
                            headers=service,
                        ) as response,
                    ):
                        assert response.status == 201, await response.text()

                for _ in range(rounds):
                    want = counts["new"] + len(users)
                    await asyncio.gather(*(post(batch) for batch in batches))
                    await wait_until(lambda w=want: counts["new"] >= w, 60, "notification round")

            async def send_messages(count: int) -> None:
                want = counts["message"] + 2 * count
                lanes = asyncio.Semaphore(args.concurrency)

                async def send(number: int) -> None:
                    pair = (number * 2) % len(users)
                    sender, peer = users[pair], users[(pair + 1) % len(users)]
                    headers = {
                        "Authorization": "Bearer "
                        + hs256_token(tenant=TENANT, user=sender, ttl=3600)
                    }
                    async with (
                        lanes,
                        http.post(
                            f"{api}/api/messages/send/",
                            json={"to_user_id": peer, "body": f"m{number}"},
                            headers=headers,
                        ) as response,
                    ):
                        assert response.status == 201, await response.text()

                await asyncio.gather(*(send(n) for n in range(count)))
                await wait_until(lambda: counts["message"] >= want, 60, "chat messages")

            # Warm-up: conversations exist, caches are filled, first-use costs are paid.
            await notify_rounds(1)
            await send_messages(len(users) // 2)
            await asyncio.sleep(1.0)
            before = cpu(cluster.pids)
            await asyncio.sleep(args.idle_seconds)
            idle = [
                (a - b) / args.idle_seconds for a, b in zip(cpu(cluster.pids), before, strict=True)
            ]
            notifications = await measure(
                pids=cluster.pids,
                redis=redis,
                idle_rates=idle,
                units=args.rounds * len(users),
                work=lambda: notify_rounds(args.rounds),
            )
            messages = await measure(
                pids=cluster.pids,
                redis=redis,
                idle_rates=idle,
                units=args.chat_messages,
                work=lambda: send_messages(args.chat_messages),
            )
            await asyncio.gather(*(stop_reading(s.reader, s.ws) for s in sockets))
    except BaseException:
        for log in cluster.logs:
            print(log_tail(log))
        raise
    finally:
        await redis.aclose()
        cluster.stop()
    return {
        "nodes": k,
        "layout": layout,
        "idle_cpu_share_by_node": [round(x, 4) for x in idle],
        "notifications": notifications,
        "chat_messages": messages,
    }


def others(result: dict[str, Any], phase: str) -> float | None:
    """Mean CPU per unit on nodes 2..K (those with no socket in layout ``one``)."""
    values = result[phase]["cpu_us_per_unit_by_node"][1:]
    return round(sum(values) / len(values), 2) if values else None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for layout in args.layouts.split(","):
        for k in (int(n) for n in args.nodes.split(",")):
            # A fresh database and Redis per run: Redis's counters and the rows are its own.
            async with private_services(args.database_url, log_level="WARNING") as (
                settings,
                redis,
            ):
                result = await scenario(args, settings, redis.url, k, layout)
            print(json.dumps(result), flush=True)
            runs.append(result)
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(["python-socketio", "redis", "aiohttp"]),
        "code": code_version(),
        "hub_dir": str(args.hub_dir),
        "hub_commit": args.hub_commit,
        "users": args.users,
        "rounds": args.rounds,
        "batch": args.batch,
        "chat_messages": args.chat_messages,
        "runs": runs,
    }


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def doc_section(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['when']} on {results['machine'].get('cpu_model') or 'this machine'}, "
        f"hub at `{results.get('hub_commit') or '?'}`: {results['users']} users "
        f"(one `/notifications` and one `/chat` socket each), {results['rounds']} rounds of "
        f"one notification per user ({results.get('batch', 600)} user(s) per request), "
        f"{results['chat_messages']} chat messages; CPU less each "
        "node's idle rate. Main (before routing) from issue 19 in brackets.",
        "",
        "| Layout | K | CPU per notification, nodes 2..K (no sockets in `one`) | per chat "
        "message | node 1, per notification | Redis output per notification | per chat "
        "message |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        k = run["nodes"]
        before = BEFORE.get(k, {}) if run["layout"] == "one" else {}
        n_other, m_other = others(run, "notifications"), others(run, "chat_messages")

        def with_before(value: str, key: str, unit: str, before: dict[str, int] = before) -> str:
            return f"{value} ({before[key]:,} {unit})" if key in before else value

        out_n = fmt(run["notifications"]["redis_output_bytes_per_unit"], 0) + " B"
        out_m = fmt(run["chat_messages"]["redis_output_bytes_per_unit"], 0) + " B"
        cells = [
            run["layout"],
            str(k),
            with_before(fmt(n_other) + " us", "notification_us", "us"),
            with_before(fmt(m_other) + " us", "message_us", "us"),
            fmt(run["notifications"]["cpu_us_per_unit_by_node"][0]) + " us",
            with_before(out_n, "out_n", "B"),
            with_before(out_m, "out_m", "B"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update_doc(path: Path, section: str) -> None:
    replace_section(
        path,
        section,
        start=DOC_START,
        end=DOC_END,
        missing=f"## Scale-out routing: `benchmarks/routing.py`\n\n{DOC_START}\n{DOC_END}\n",
        new_file="# Benchmarks\n",
    )


def hub_commit(hub_dir: Path) -> str:
    """The commit of the checkout whose hub is run (``--hub-dir``)."""
    git = subprocess.run(  # noqa: S603 - git, on a directory the user named
        ["git", "-C", str(hub_dir), "rev-parse", "--short=12", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    return git.stdout.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default="1,2,4,6", help="K values, comma-separated")
    parser.add_argument("--layouts", default="one,spread", help="one (all on node 1), spread")
    parser.add_argument("--users", type=int, default=600, help="users, two sockets each")
    parser.add_argument("--rounds", type=int, default=10, help="notifications per user")
    parser.add_argument("--chat-messages", type=int, default=720, help="chat messages")
    parser.add_argument(
        "--batch",
        type=int,
        default=1,
        help="users per POST /api/notifications/ (1: one bus message per notification, "
        "the costliest case for the nodes that receive it)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--idle-seconds", type=float, default=3.0, help="window of each node's idle CPU rate"
    )
    parser.add_argument("--hub-dir", default=str(REPO), help="checkout whose hub is run")
    parser.add_argument("--quick", action="store_true", help="100 users, K = 1,2, layout one")
    parser.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="a server where the user may create databases (a fresh one per run)",
    )
    parser.add_argument(
        "--log-dir", default=str(Path(tempfile.gettempdir()) / "notifyhub-routing-bench")
    )
    parser.add_argument("--output", default=str(RESULTS))
    add_doc_options(
        parser,
        "markdown file whose routing section --update-doc rewrites",
        "rewrite the routing section of --doc with these results",
    )
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    apply_quick(
        args,
        build_parser,
        {"users": 100, "rounds": 3, "chat_messages": 100, "nodes": "1,2", "layouts": "one"},
    )
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    args.hub_commit = hub_commit(Path(args.hub_dir))
    results = asyncio.run(run(args))
    output = Path(args.output)
    if args.quick and args.output == str(RESULTS):
        output = RESULTS.with_name("routing-quick.json")
    write_results(output, results)
    print(f"results: {output}")
    print(doc_section(results))
    update_doc_if_asked(args, update_doc, doc_section(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
