"""Idle memory per socket at several socket counts on one ``serve`` process, and connects/s.

One hub process (pinned to one core, Redis manager as in production) and a load generator
(the other core) that connects authenticated ``/notifications`` websocket clients in steps
(default 1,000, 5,000 and 10,000 in total) and, after each step and ``--settle`` idle
seconds, reads the server's RSS and PSS. KB per socket = (RSS now - RSS after warm-up with no
client) / sockets connected. Connects/s is measured per step (JWT check, subscription,
Socket.IO CONNECT answered) with a light load generator (bare sockets) unless ``--client
aiohttp`` (fanout.py's clients, which are the limit there), along with server CPU per connect
and every core's busy share. The handshake's headers stay parsed for the socket's life, so a
client that sends more of them costs more: aiohttp's clients ~1 KB per socket more than the
bare ones (a browser with cookies, more again).

``--breakdown`` runs the server under tracemalloc (slow: connect rates are then meaningless)
and records, between the baseline and the last step, the allocation sites and the object
types (count and ``sys.getsizeof`` bytes, objgraph style) that grew, per socket.

The servers, clients, database and warm-up are those of ``benchmarks/fanout.py``.

    .venv/bin/python benchmarks/socket_memory.py                 # 1k, 5k, 10k
    .venv/bin/python benchmarks/socket_memory.py --quick         # smoke run: 200, 500
    .venv/bin/python benchmarks/socket_memory.py --breakdown --steps 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import aiohttp  # noqa: E402

from benchmarks import fanout  # noqa: E402
from benchmarks.cli import apply_quick  # noqa: E402
from benchmarks.machine import core_times, process_cpu_seconds  # noqa: E402
from tests.harness.rawws import RawWebSocket, connect_socketio  # noqa: E402

OUTPUT = Path("benchmarks") / "results" / "socket_memory.json"
TRACED_SITES = 25


# -- inside the server, with --breakdown ------------------------------------------------


def type_census() -> dict[str, list[int]]:
    """Objects tracked by the GC, by type name: [count, sys.getsizeof bytes]."""
    import gc

    census: dict[str, list[int]] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        row = census.setdefault(name, [0, 0])
        row[0] += 1
        row[1] += sys.getsizeof(obj)
    return census


def serve_traced(dump: Path, argv: list[str]) -> int:
    """Run ``notifyhub serve`` under tracemalloc; each SIGUSR1 writes a snapshot to ``dump``
    (the first one the baseline, later ones the difference to it)."""
    import tracemalloc

    from hub.cli import main

    tracemalloc.start(1)
    state: dict[str, Any] = {}

    def on_signal(_signum: int, _frame: object) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        census = type_census()
        if "snapshot" not in state:
            state["snapshot"], state["census"] = snapshot, census
            dump.write_text(json.dumps({"baseline": True}))
            return
        sites = snapshot.compare_to(state["snapshot"], "lineno")[:TRACED_SITES]
        files = snapshot.compare_to(state["snapshot"], "filename")[:TRACED_SITES]
        before = state["census"]
        grown = {
            name: [count - before.get(name, [0, 0])[0], size - before.get(name, [0, 0])[1]]
            for name, (count, size) in census.items()
        }
        top = sorted(grown.items(), key=lambda item: -item[1][1])[:TRACED_SITES]
        dump.write_text(
            json.dumps(
                {
                    "sites": [
                        {"site": str(s.traceback[0]), "bytes": s.size_diff, "blocks": s.count_diff}
                        for s in sites
                    ],
                    "files": [
                        {"file": str(s.traceback[0].filename), "bytes": s.size_diff} for s in files
                    ],
                    "types": [{"type": n, "count": c, "bytes": b} for n, (c, b) in top],
                }
            )
        )

    signal.signal(signal.SIGUSR1, on_signal)
    return main(argv)


def read_dump(dump: Path) -> dict[str, Any] | None:
    if not dump.exists() or not dump.stat().st_size:
        return None
    data: dict[str, Any] = json.loads(dump.read_text())
    return data


async def traced_snapshot(pid: int, dump: Path, limit: float = 120.0) -> dict[str, Any]:
    await asyncio.to_thread(dump.unlink, missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + limit
    while True:
        await asyncio.sleep(0.5)
        with contextlib.suppress(ValueError):  # half written
            data = await asyncio.to_thread(read_dump, dump)
            if data is not None:
                return data
        if time.monotonic() > deadline:
            raise TimeoutError("the traced server wrote no snapshot")


def per_socket(breakdown: dict[str, Any], sockets: int) -> dict[str, Any]:
    for section in ("files", "sites", "types"):
        for row in breakdown.get(section, []):
            row["bytes_per_socket"] = round(row["bytes"] / sockets, 1)
    return breakdown


# -- the load generator ----------------------------------------------------------------


class IdleRawClient:
    """A Socket.IO client on a bare socket (tests/harness/rawws.py) that only answers pings:
    a fraction of an aiohttp client's cost per connect, so that the connect rate measures the
    server rather than the load generator."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.ws: RawWebSocket | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closed_by_server = False

    async def connect(self, _session: object, port: int, limit: float) -> None:
        async with asyncio.timeout(limit):
            try:
                self.ws = await connect_socketio(port, fanout.NAMESPACE, self.token)
            except AssertionError as exc:  # the harness asserts on what it reads
                raise ConnectionError(str(exc)) from None
        self.reader = asyncio.create_task(self._answer_pings(self.ws))

    async def _answer_pings(self, ws: RawWebSocket) -> None:
        while True:
            try:
                frame = await ws.read_text(timeout=3600)
            except TimeoutError:
                continue
            if frame is None:
                self.closed_by_server = True
                return
            if frame == "2":
                ws.send_text("3")

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        if self.ws is not None:
            self.ws.close()


def busy_shares(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, float]:
    return {
        name: round((busy - before[name][0]) / max(1, total - before[name][1]), 2)
        for name, (busy, total) in after.items()
        if name in before
    }


def generator_clients(
    bench: fanout.Bench, stats: fanout.Stats, indices: range, kind: str
) -> list[Any]:
    if kind == "aiohttp":
        return fanout.make_clients(bench, "u", indices, stats)
    return [
        IdleRawClient(fanout.make_token(bench.secret, tenant=bench.tenant, user=f"u{i}"))
        for i in indices
    ]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    steps = sorted({int(s) for s in args.steps.split(",")})
    fanout_args = fanout.build_parser().parse_args(
        [
            *("--clients", str(steps[-1]), "--connect-timeout", str(args.connect_timeout)),
            *("--pg-admin-url", args.pg_admin_url, "--redis-url", args.redis_url),
            *([] if args.redis else ["--no-redis"]),
        ]
    )
    tenant = f"mem-{secrets.token_hex(4)}"
    secret = secrets.token_hex(32)
    workdir = Path(tempfile.mkdtemp(prefix="notifyhub-socket-memory-"))
    bench = fanout.Bench(
        args=fanout_args,
        tenant=tenant,
        secret=secret,
        service_token=fanout.make_token(secret, tenant=tenant, user="bench", roles=["service"]),
        workdir=workdir,
    )
    results: dict[str, Any] = {
        **fanout.results_header("socket_memory"),
        "params": {
            "steps": steps,
            "settle_s": args.settle,
            "connect_concurrency": args.connect_concurrency,
            "idle_seconds": args.idle_seconds,
            "redis": args.redis,
            "client": args.client,
            "breakdown": args.breakdown,
        },
        "steps": [],
        "logs": str(workdir),
    }
    async with fanout.bench_servers(bench, "notifyhub_mem") as specs:
        spec = specs["notifyhub"]
        dump = workdir / "breakdown.json"
        if args.breakdown:
            serve_args = spec.command[spec.command.index("serve") :]
            spec.command = [sys.executable, str(Path(__file__)), "--serve-traced", str(dump)]
            spec.command += ["--", *serve_args]
        await run_steps(bench, spec, steps=steps, args=args, results=results, dump=dump)
    return results


async def run_steps(
    bench: fanout.Bench,
    spec: fanout.ServerSpec,
    *,
    steps: list[int],
    args: argparse.Namespace,
    results: dict[str, Any],
    dump: Path,
) -> None:
    server = await fanout.start_server(
        spec, cpu=args.server_cpu, workdir=bench.workdir, start_within=60
    )
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    http = aiohttp.ClientSession()
    stats = fanout.Stats(size=steps[-1])
    connected: list[Any] = []
    try:
        await fanout.warm_up(bench, server, session, http)
        await asyncio.sleep(args.settle)
        baseline = fanout.memory_kb(server.pid)
        results["baseline"] = baseline
        if args.breakdown:
            await traced_snapshot(server.pid, dump)
        for step in steps:
            clients = generator_clients(bench, stats, range(len(connected), step), args.client)
            cpu_before = process_cpu_seconds(server.pid)
            cores_before = core_times()
            more, failures, seconds = await fanout.timed_connect(
                clients, session, server.port, args
            )
            cpu = process_cpu_seconds(server.pid) - cpu_before
            cores = core_times()
            connected += more
            await asyncio.sleep(args.settle)
            memory = fanout.memory_kb(server.pid)
            row = {
                "sockets": len(connected),
                "connect_failures": len(failures),
                "failure_samples": failures[:3],
                "connects_per_s": round(len(more) / seconds, 1),
                "server_cpu_ms_per_connect": round(1000 * cpu / max(1, len(more)), 3),
                # Every core's busy share while connecting (server, generator, PostgreSQL...).
                "cores_busy": {
                    name: round(
                        (busy - cores_before[name][0]) / max(1, total - cores_before[name][1]), 2
                    )
                    for name, (busy, total) in cores.items()
                    if name in cores_before
                },
                "rss_kb": memory["rss_kb"],
                "pss_kb": memory.get("pss_kb"),
                "kb_per_socket_rss": round(
                    (memory["rss_kb"] - baseline["rss_kb"]) / len(connected), 2
                ),
                "kb_per_socket_pss": round(
                    (memory.get("pss_kb", 0) - baseline.get("pss_kb", 0)) / len(connected), 2
                ),
                "closed_by_server": stats.closed_clients
                + sum(getattr(c, "closed_by_server", False) for c in connected),
            }
            results["steps"].append(row)
            print(f"[socket_memory] {json.dumps(row)}", flush=True)
        if args.idle_seconds > 0:
            # Pings and pongs only (every client answers): what idle sockets cost in CPU.
            cpu_before = process_cpu_seconds(server.pid)
            await asyncio.sleep(args.idle_seconds)
            cpu = process_cpu_seconds(server.pid) - cpu_before
            results["idle"] = {
                "sockets": len(connected),
                "seconds": args.idle_seconds,
                "server_cpu_share": round(cpu / args.idle_seconds, 4),
                "closed_by_server": sum(getattr(c, "closed_by_server", False) for c in connected),
            }
            print(f"[socket_memory] idle: {json.dumps(results['idle'])}", flush=True)
        if args.breakdown:
            results["breakdown"] = per_socket(
                await traced_snapshot(server.pid, dump), len(connected)
            )
    finally:
        await fanout.shut_down(server, connected, session, http)
        results["log_problems"] = fanout.log_problems(server.log_path)


# The command line, as data: flag -> argparse keywords.
OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--steps", {"default": "1000,5000,10000", "help": "socket counts, ascending"}),
    (
        "--client",
        {
            "choices": ("raw", "aiohttp"),
            "default": "raw",
            "help": "load generator: bare sockets (light) or fanout.py's aiohttp clients",
        },
    ),
    ("--settle", {"type": float, "default": 3.0, "help": "idle seconds before RSS reads"}),
    ("--connect-concurrency", {"type": int, "default": 100, "help": "parallel connects"}),
    ("--connect-timeout", {"type": float, "default": 30.0, "help": "seconds per connect"}),
    (
        "--idle-seconds",
        {
            "type": float,
            "default": 0.0,
            "help": "then measure the server's CPU share this long with every socket idle (pings)",
        },
    ),
    ("--redis", {"action": argparse.BooleanOptionalAction, "default": True}),
    ("--redis-url", {"default": "redis://127.0.0.1:6379/14"}),
    ("--pg-admin-url", {"default": "postgresql://postgres@127.0.0.1:5432/test"}),
    ("--server-cpu", {"type": int, "default": 0, "help": "core of the server"}),
    ("--client-cpu", {"type": int, "default": 1, "help": "core of the load generator"}),
    (
        "--breakdown",
        {
            "action": "store_true",
            "help": "tracemalloc + type census in the server: where the bytes of a socket are",
        },
    ),
    ("--output", {"default": str(OUTPUT), "help": "results JSON"}),
    (
        "--quick",
        {
            "action": "store_true",
            "help": "smoke run: 200 and 500 sockets, 1 s settle, into socket_memory-quick.json",
        },
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "RSS per idle Socket.IO websocket of one notifyhub serve process at several socket "
            "counts, and connects/s. Loopback only."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, spec in OPTIONS:
        parser.add_argument(flag, **spec)
    parser.add_argument("--serve-traced", metavar="DUMP", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-traced"]:
        return serve_traced(Path(argv[1]), argv[3:])
    args = build_parser().parse_args(argv)
    quick_output = str(OUTPUT.with_name("socket_memory-quick.json"))
    apply_quick(args, build_parser, {"steps": "200,500", "settle": 1.0, "output": quick_output})
    if args.client_cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.client_cpu})
    most = max(int(s) for s in args.steps.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * most + 256)), hard))
    import uvloop

    results = uvloop.run(measure(args))
    output = Path(args.output)
    if not output.is_absolute():
        output = fanout.REPO / output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
