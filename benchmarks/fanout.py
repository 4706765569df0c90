"""Fan-out benchmark: notifyhub against Node socket.io 4 and stock python-socketio, side by side.

One ``serve`` process (pinned to one core) with N websocket clients (a load generator pinned
to the other core), each a distinct user of one tenant. Measured for both servers in the
same run, one server at a time so each has its core to itself (``--servers``; the peers are
``benchmarks/node/server.js`` and ``benchmarks/stock_server.py``, with the same endpoints):

1. broadcast: deliveries/s of a tenant-wide ``broadcast`` (hub: ``POST /api/broadcasts/``;
   peers: ``POST /bench/broadcast``, one ``emit`` to the tenant room);
2. per user: deliveries/s of one stored notification per user (hub:
   ``POST /api/notifications/`` for all N users; peers: ``POST /bench/per-user``, a
   multi-row INSERT and one ``emit`` per user room, awaited by the stock server);
3. idle memory per socket: server RSS with N idle clients minus RSS after warm-up with
   none, divided by N.

Deliveries/s = deliveries / (first trigger sent -> last delivery received). Each round sends
``--pipeline`` triggers back to back and waits until every client has all of them.

The load generator is a minimal Socket.IO-over-websocket client on aiohttp (no
permessage-deflate) that counts frames by event name and parses only a sample of them.
Load goes to 127.0.0.1 only; every wait has a timeout; servers are stopped by PID and the
benchmark database is dropped, also on errors. Not a test: run it by hand.

    .venv/bin/python benchmarks/fanout.py --quick    # smoke run, ~200 clients
    .venv/bin/python benchmarks/fanout.py            # full run, writes results + docs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path, where benchmarks/email.py would shadow
# the standard library's ``email``; the repository root, home of benchmarks.machine, is not.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import aiohttp  # noqa: E402
import jwt  # noqa: E402

from benchmarks.cli import (  # noqa: E402
    add_doc_options,
    add_quiet_options,
    add_rig_options,
    apply_quick,
)
from benchmarks.database import (  # noqa: E402
    admin_execute,
    create_database,
    database_url,
    drop_database,
)
from benchmarks.machine import (  # noqa: E402
    CpuWindow,
    code_version,
    free_port,
    machine_info,
    wait_for_quiet,
)
from benchmarks.processes import log_tail, profile_summary, spawn_pinned  # noqa: E402
from benchmarks.report import replace_section, update_doc_if_asked, write_results  # noqa: E402
from benchmarks.socketio_client import (  # noqa: E402
    CLOSED_TYPES,
    engineio_url,
    join_namespace,
    stop_reading,
)
from benchmarks.stock_server import CREATE_TABLE as PEER_TABLE  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
NAMESPACE = "/notifications"
EVENT_PREFIX = f'42{NAMESPACE},["'
EVENT_PREFIX_LEN = len(EVENT_PREFIX)
BROADCAST_EVENT = "broadcast"
NEW_EVENT = "notification:new"
NOTIFICATION_KEYS = frozenset(
    {"id", "tenant_id", "user_id", "seq", "category", "title", "body", "data", "link"}
    | {"created_at", "read_at", "seen_at", "archived_at", "expires_at"}
)
BROADCAST_KEYS = frozenset({"title", "body", "data"})
TITLE = "Scheduled maintenance tonight"
BODY = (
    "The CRM will be read-only from 22:00 to 22:30 UTC while we upgrade the database. "
    "Drafts are kept."
)
DOC_START = "<!-- fanout-results:start -->"
DOC_END = "<!-- fanout-results:end -->"
# The targets of issue 12: broadcast >= Node and >= 5x stock, per user >= 2x Node.
TARGET_BROADCAST_VS_NODE = 1.0
TARGET_BROADCAST_VS_STOCK = 5.0
TARGET_PER_USER_VS_NODE = 2.0
TARGET_KB_PER_SOCKET = 20.0
SERVER_NAMES = ("notifyhub", "stock", "node")
PEERS = ("node", "stock")
SERVER_TITLES = {
    "notifyhub": "notifyhub",
    "node": "Node socket.io 4",
    "stock": "stock python-socketio",
}
NODE_DIR = REPO / "benchmarks" / "node"
NODE_MAJOR_MIN = 18  # socket.io 4 and node:util parseArgs


# -- small helpers ------------------------------------------------------------------------


FACTS_PACKAGES = (
    "python-socketio",
    "python-engineio",
    "aiohttp",
    "asyncpg",
    "SQLAlchemy",
    "redis",
    "orjson",
    "uvloop",
    "PyJWT",
)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (status) and Pss (smaps_rollup) of a process, in KB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            found["rss_kb"] = int(line.split()[1])
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                found["pss_kb"] = int(line.split()[1])
    return found


def make_token(
    secret: str, *, tenant: str, user: str, roles: list[str] | None = None, ttl: int = 7200
) -> str:
    now = int(time.time())
    claims = {
        "sub": user,
        "tenant_id": tenant,
        "roles": roles or [],
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


# -- the load generator ---------------------------------------------------------------


@dataclass
class Stats:
    """Delivery counters of every client, by event; signals when a target total is hit."""

    size: int
    sample_every: int = 50
    per_client: dict[str, list[int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    target_event: str | None = None
    target_total: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    reached_at: float = 0.0
    parsed: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # The hub promises per-user seq order (docs/protocol.md); the stock server promises nothing, so
    # for it out-of-order frames are only counted.
    strict_seq: bool = True
    last_seq: dict[int, int] = field(default_factory=dict)
    seq_gaps: int = 0
    seq_out_of_order: int = 0
    unexpected_frames: int = 0
    closed_clients: int = 0

    def arm(self, event: str, more: int) -> None:
        """Wait for ``more`` deliveries of ``event`` beyond those already counted."""
        self.target_event = event
        self.target_total = self.totals.get(event, 0) + more
        self.reached.clear()
        if self.totals.get(event, 0) >= self.target_total:
            self.reached_at = time.perf_counter()
            self.reached.set()

    def record(self, index: int, user: str, tenant: str, event: str, frame: str) -> None:
        counts = self.per_client.get(event)
        if counts is None:
            counts = self.per_client[event] = [0] * self.size
        counts[index] += 1
        total = self.totals[event] = self.totals.get(event, 0) + 1
        if index % self.sample_every == 0 or self.parsed.get(event, 0) < 5:
            self.check(index, user, tenant, event, frame)
        if event == self.target_event and total == self.target_total:
            self.reached_at = time.perf_counter()
            self.reached.set()

    def check(self, index: int, user: str, tenant: str, event: str, frame: str) -> None:
        """Parse a sampled frame fully and check it against the documented shapes."""
        self.parsed[event] = self.parsed.get(event, 0) + 1
        try:
            name, payload = json.loads(frame[2 + len(NAMESPACE) + 1 :])
        except ValueError:
            self.problem(f"{event}: frame is not a JSON [event, data] array: {frame[:200]}")
            return
        if event == BROADCAST_EVENT:
            if not isinstance(payload, dict) or set(payload) != BROADCAST_KEYS:
                self.problem(f"broadcast payload has keys {sorted(payload or {})}")
        elif event == NEW_EVENT:
            if not isinstance(payload, dict) or set(payload) != NOTIFICATION_KEYS:
                self.problem(f"notification:new has keys {sorted(payload or {})}")
                return
            if payload["user_id"] != user or payload["tenant_id"] != tenant:
                self.problem(f"client {user} got a notification of {payload['user_id']}")
            if not isinstance(payload["id"], str) or not isinstance(payload["seq"], int):
                self.problem(f"id/seq types: {payload['id']!r} {payload['seq']!r}")
                return
            previous = self.last_seq.get(index)
            if previous is not None and payload["seq"] <= previous:
                self.seq_out_of_order += 1
                if self.strict_seq:
                    self.problem(f"{user}: seq went from {previous} to {payload['seq']}")
            elif previous is not None and payload["seq"] != previous + 1:
                self.seq_gaps += 1
            self.last_seq[index] = payload["seq"]
        if name != event:
            self.problem(f"event name {name!r} parsed as {event!r}")

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


class RawClient:
    """One Socket.IO client on a bare websocket: connect, authenticate, count events."""

    def __init__(self, index: int, user: str, tenant: str, token: str, stats: Stats) -> None:
        self.index = index
        self.user = user
        self.tenant = tenant
        self.token = token
        self.stats = stats
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None

    async def connect(self, session: aiohttp.ClientSession, port: int, limit: float) -> None:
        url = engineio_url(HOST, port)
        async with asyncio.timeout(limit):
            ws = await session.ws_connect(url, compress=0, autoping=True, max_msg_size=0)
            self.ws = ws
            await join_namespace(ws, NAMESPACE, self.token)
        self.reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        stats, index, user, tenant = self.stats, self.index, self.user, self.tenant
        text = aiohttp.WSMsgType.TEXT
        while True:
            message = await ws.receive()
            if message.type is text:
                frame: str = message.data
                if frame.startswith(EVENT_PREFIX):
                    end = frame.find('"', EVENT_PREFIX_LEN)
                    stats.record(index, user, tenant, frame[EVENT_PREFIX_LEN:end], frame)
                elif frame == "2":
                    await ws.send_str("3")
                else:
                    stats.unexpected_frames += 1
                    stats.problem(f"{user}: unexpected frame {frame[:120]!r}")
            elif message.type in CLOSED_TYPES:
                stats.closed_clients += 1
                return

    async def close(self) -> None:
        await stop_reading(self.reader, self.ws)


async def connect_all(
    clients: Sequence[RawClient],
    session: aiohttp.ClientSession,
    port: int,
    *,
    concurrency: int,
    limit: float,
) -> tuple[list[RawClient], list[str]]:
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(client: RawClient) -> RawClient | None:
        async with gate:
            try:
                await client.connect(session, port, limit)
            except (TimeoutError, OSError, aiohttp.ClientError, ConnectionError) as exc:
                failures.append(f"{client.user}: {type(exc).__name__}: {exc}")
                await client.close()
                return None
            return client

    done = await asyncio.gather(*(one(c) for c in clients))
    return [c for c in done if c is not None], failures


async def timed_connect(
    clients: Sequence[RawClient],
    session: aiohttp.ClientSession,
    port: int,
    args: argparse.Namespace,
) -> tuple[list[RawClient], list[str], float]:
    """:func:`connect_all` with ``--connect-concurrency`` and ``--connect-timeout``; and how
    many seconds it took."""
    started = time.perf_counter()
    connected, failures = await connect_all(
        clients, session, port, concurrency=args.connect_concurrency, limit=args.connect_timeout
    )
    return connected, failures, time.perf_counter() - started


# -- servers --------------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    command: list[str]
    env: dict[str, str]
    broadcast_path: str
    per_user_path: str
    loop: str
    strict_seq: bool


@dataclass
class RunningServer:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"


def spawn(spec: ServerSpec, *, port: int, cpu: int | None, workdir: Path) -> RunningServer:
    log_path = workdir / f"{spec.name}.log"
    command = [part.replace("{port}", str(port)) for part in spec.command]
    process = spawn_pinned(command, env=spec.env, cwd=workdir, log_path=log_path, cpu=cpu)
    return RunningServer(spec, port, process, log_path)


async def start_server(
    spec: ServerSpec, *, cpu: int | None, workdir: Path, start_within: float
) -> RunningServer:
    running = spawn(spec, port=free_port(), cpu=cpu, workdir=workdir)
    process, log_path = running.process, running.log_path
    deadline = time.monotonic() + start_within
    async with aiohttp.ClientSession() as session:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{spec.name} exited with {process.returncode} at start:\n{log_tail(log_path)}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(
                    f"{running.base_url}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return running
            if time.monotonic() > deadline:
                await asyncio.to_thread(stop_server, running)
                raise RuntimeError(f"{spec.name} did not answer /healthz in {start_within:.0f}s")
            await asyncio.sleep(0.1)


def stop_server(server: RunningServer) -> None:
    """SIGTERM, then SIGKILL after 10 s; only ever this PID (and its own session)."""
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


async def shut_down(
    server: RunningServer, clients: Sequence[Any], *sessions: aiohttp.ClientSession
) -> None:
    """Close ``clients`` (anything with ``async close()``) and ``sessions``, then stop
    ``server``."""
    await asyncio.gather(*(c.close() for c in clients))
    for session in sessions:
        await session.close()
    await asyncio.to_thread(stop_server, server)


def log_problems(path: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return [
            line[:300]
            for line in path.read_text(errors="replace").splitlines()
            if re.search(r"ERROR|CRITICAL|Traceback|Exception", line)
        ][:20]
    return []


# -- database -------------------------------------------------------------------------


def migrate(env: dict[str, str], workdir: Path) -> None:
    script = Path(sys.executable).parent / "notifyhub"
    command = (
        [str(script), "migrate"]
        if script.exists()
        else [
            sys.executable,
            "-c",
            "import sys; from hub.cli import main; sys.exit(main())",
            "migrate",
        ]
    )
    result = subprocess.run(  # noqa: S603 - our own CLI
        command, env=env, cwd=workdir, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"notifyhub migrate failed:\n{result.stdout}\n{result.stderr}")


# -- measurements ---------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    tenant: str
    secret: str
    service_token: str
    workdir: Path

    @classmethod
    def start(cls, args: argparse.Namespace, name: str) -> Bench:
        """A fresh tenant, JWT secret, service token and scratch folder for one run."""
        tenant = f"bench-{secrets.token_hex(4)}"
        secret = secrets.token_hex(32)
        return cls(
            args=args,
            tenant=tenant,
            secret=secret,
            service_token=make_token(secret, tenant=tenant, user="bench-crm", roles=["service"]),
            workdir=Path(tempfile.mkdtemp(prefix=f"notifyhub-{name}-")),
        )


def make_clients(
    bench: Bench,
    prefix: str,
    count: int | range,
    stats: Stats,
    kind: type[RawClient] | None = None,
) -> list[RawClient]:
    """``count`` clients, users ``{prefix}0``.. (or ``{prefix}{i}`` for each ``i`` of a range)
    of the bench tenant, each with its own token."""
    return [
        (kind or RawClient)(
            i,
            f"{prefix}{i}",
            bench.tenant,
            make_token(bench.secret, tenant=bench.tenant, user=f"{prefix}{i}"),
            stats,
        )
        for i in (range(count) if isinstance(count, int) else count)
    ]


def results_header(name: str) -> dict[str, Any]:
    """What every results file starts with: which benchmark, when, on what, at which commit."""
    return {
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine_info(FACTS_PACKAGES),
        "code": code_version(),
    }


TriggerFactory = Callable[[int], dict[str, Any]]


async def trigger(
    session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any]
) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.post(
        url,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=60),
    ) as response:
        await response.read()
        return response.status, time.perf_counter() - started


async def measure_fanout(
    *,
    bench: Bench,
    server: RunningServer,
    http: aiohttp.ClientSession,
    stats: Stats,
    clients: Sequence[RawClient],
    path: str,
    event: str,
    body_for: TriggerFactory,
    expected_status: int,
) -> dict[str, Any]:
    """``rounds`` rounds of ``pipeline`` triggers; each waits for every client's delivery."""
    args = bench.args
    rounds, pipeline, size = args.rounds, args.pipeline, len(clients)
    url = server.base_url + path
    before_counts = list(stats.per_client.get(event, [0] * stats.size))
    before_total = stats.totals.get(event, 0)
    http_errors: list[str] = []
    round_seconds: list[float] = []
    trigger_seconds: list[float] = []
    timed_out = False
    cpu = CpuWindow.begin(server.pid)
    first_trigger = time.perf_counter()
    last_delivery = first_trigger
    for round_number in range(rounds):
        stats.arm(event, size * pipeline)
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(
                trigger(http, url, bench.service_token, body_for(round_number * pipeline + k))
                for k in range(pipeline)
            ),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                http_errors.append(f"{type(answer).__name__}: {answer}")
            else:
                status, seconds = answer
                trigger_seconds.append(seconds)
                if status != expected_status:
                    http_errors.append(f"HTTP {status}")
        try:
            async with asyncio.timeout(args.wait_timeout):
                await stats.reached.wait()
        except TimeoutError:
            timed_out = True
            last_delivery = time.perf_counter()
            break
        last_delivery = stats.reached_at
        round_seconds.append(stats.reached_at - started)
    elapsed = last_delivery - first_trigger
    (cpu_server,), cpu_client, busy_s, core_busy = cpu.end()
    # Late frames (duplicates) have a moment to arrive before the per-client check.
    await asyncio.sleep(args.settle_after)
    after_counts = stats.per_client.get(event, [0] * stats.size)
    got = [after_counts[c.index] - before_counts[c.index] for c in clients]
    expected_each = pipeline * (len(round_seconds) + (1 if timed_out else 0))
    delivered = stats.totals.get(event, 0) - before_total
    counted_in_window = (
        sum(got) if timed_out else size * pipeline * len(round_seconds)
    )  # deliveries inside the timed window
    return {
        "event": event,
        "rounds_completed": len(round_seconds),
        "rounds": rounds,
        "pipeline": pipeline,
        "clients": size,
        "expected": size * pipeline * rounds,
        "delivered": delivered,
        "seconds": round(elapsed, 4),
        "deliveries_per_s": round(counted_in_window / elapsed, 1) if elapsed > 0 else None,
        "round_ms": {
            "p50": round(1000 * statistics.median(round_seconds), 2) if round_seconds else None,
            "max": round(1000 * max(round_seconds), 2) if round_seconds else None,
        },
        "trigger_http_ms": {
            "p50": round(1000 * statistics.median(trigger_seconds), 2) if trigger_seconds else None,
            "max": round(1000 * max(trigger_seconds), 2) if trigger_seconds else None,
        },
        "clients_missing_some": sum(1 for g in got if g < expected_each),
        "clients_with_duplicates": sum(1 for g in got if g > expected_each),
        "timed_out": timed_out,
        "http_errors": http_errors[:10],
        "server_cpu_s": round(cpu_server, 3),
        "server_cpu_util": round(cpu_server / elapsed, 3) if elapsed > 0 else None,
        "loadgen_cpu_s": round(cpu_client, 3),
        "loadgen_cpu_util": round(cpu_client / elapsed, 3) if elapsed > 0 else None,
        "core_busy": core_busy,
        # Redis, PostgreSQL and anything else running on the machine meanwhile.
        "other_cpu_s": round(max(0.0, busy_s - cpu_server - cpu_client), 3),
        "other_cpu_util": round(max(0.0, busy_s - cpu_server - cpu_client) / elapsed, 3)
        if elapsed > 0
        else None,
        "server_cpu_us_per_delivery": round(1e6 * cpu_server / counted_in_window, 2)
        if counted_in_window
        else None,
    }


async def measure_repeated(quiet: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """``--repeats`` measurements on a quiet machine; the median one, with every figure."""
    bench: Bench = kwargs["bench"]
    runs: list[dict[str, Any]] = []
    for _ in range(bench.args.repeats):
        quiet.append(await wait_for_quiet(bench.args.quiet_threshold, bench.args.quiet_timeout))
        run = await measure_fanout(**kwargs)
        runs.append(run)
        if run["timed_out"]:
            break
    ranked = sorted(runs, key=lambda r: r["deliveries_per_s"] or 0.0)
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    figures = [r["deliveries_per_s"] for r in runs]
    chosen["repeats"] = len(runs)
    chosen["deliveries_per_s_all"] = figures
    chosen["server_cpu_us_per_delivery_all"] = [r["server_cpu_us_per_delivery"] for r in runs]
    for key in ("clients_missing_some", "clients_with_duplicates"):
        chosen[key] = max(r[key] for r in runs)
    chosen["timed_out"] = any(r["timed_out"] for r in runs)
    chosen["http_errors"] = [e for r in runs for e in r["http_errors"]][:10]
    return chosen


async def warm_up(
    bench: Bench,
    server: RunningServer,
    session: aiohttp.ClientSession,
    http: aiohttp.ClientSession,
) -> None:
    """A few clients, one broadcast and one create, then disconnect: imports, pools, caches."""
    count = 10
    stats = Stats(size=count)
    clients = make_clients(bench, "warm", count, stats)
    connected, failures = await connect_all(
        clients, session, server.port, concurrency=10, limit=bench.args.connect_timeout
    )
    if failures:
        raise RuntimeError(f"{server.spec.name}: warm-up connects failed: {failures[:3]}")
    try:
        for path, event, body in (
            (server.spec.broadcast_path, BROADCAST_EVENT, broadcast_body(-1)),
            (server.spec.per_user_path, NEW_EVENT, per_user_body([c.user for c in connected])),
        ):
            for _ in range(3):
                stats.arm(event, len(connected))
                status, _seconds = await trigger(
                    http, server.base_url + path, bench.service_token, body
                )
                if status >= 300:
                    raise RuntimeError(f"{server.spec.name}: warm-up {path} answered {status}")
                async with asyncio.timeout(bench.args.wait_timeout):
                    await stats.reached.wait()
    finally:
        await asyncio.gather(*(c.close() for c in connected))


def broadcast_body(number: int) -> dict[str, Any]:
    return {"title": TITLE, "body": BODY, "data": {"kind": "bench", "n": number}}


def per_user_body(user_ids: list[str]) -> dict[str, Any]:
    return {"user_ids": user_ids, "title": TITLE, "body": BODY}


async def run_server_bench(bench: Bench, spec: ServerSpec) -> dict[str, Any]:
    args = bench.args
    result: dict[str, Any] = {"loop": spec.loop, "errors": []}
    server = await start_server(
        spec, cpu=args.server_cpu, workdir=bench.workdir, start_within=args.start_timeout
    )
    result["pid"] = server.pid
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    session = aiohttp.ClientSession(connector=connector)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    connected: list[RawClient] = []
    stats = Stats(size=args.clients, sample_every=args.sample_every, strict_seq=spec.strict_seq)
    try:
        await warm_up(bench, server, session, http)
        await asyncio.sleep(args.settle)
        baseline = memory_kb(server.pid)
        quiet: dict[str, Any] = {}
        result["machine_quiet_before"] = quiet

        clients = make_clients(bench, "u", args.clients, stats)
        cpu = CpuWindow.begin(server.pid)
        connected, failures, connect_seconds = await timed_connect(
            clients, session, server.port, args
        )
        (cpu_server,), cpu_client, _busy_s, _core_busy = cpu.end()
        result["connect"] = {
            "clients": len(connected),
            "failures": len(failures),
            "failure_samples": failures[:5],
            "seconds": round(connect_seconds, 3),
            "per_s": round(len(connected) / connect_seconds, 1) if connect_seconds else None,
            # Whether the server or the load generator (which also does the handshakes'
            # client side) was the limit.
            "server_cpu_us_per_connect": (
                round(1e6 * cpu_server / len(connected), 1) if connected else None
            ),
            "server_util": round(cpu_server / connect_seconds, 3) if connect_seconds else None,
            "client_util": round(cpu_client / connect_seconds, 3) if connect_seconds else None,
        }
        if not connected:
            raise RuntimeError(f"{spec.name}: no client could connect: {failures[:3]}")
        await asyncio.sleep(args.settle)
        loaded = memory_kb(server.pid)
        result["memory"] = {
            "baseline_rss_kb": baseline.get("rss_kb"),
            "connected_rss_kb": loaded.get("rss_kb"),
            "baseline_pss_kb": baseline.get("pss_kb"),
            "connected_pss_kb": loaded.get("pss_kb"),
            "kb_per_socket_rss": round((loaded["rss_kb"] - baseline["rss_kb"]) / len(connected), 2),
            "kb_per_socket_pss": round(
                (loaded.get("pss_kb", 0) - baseline.get("pss_kb", 0)) / len(connected), 2
            ),
        }

        users = [c.user for c in connected]
        rig = {"bench": bench, "server": server, "http": http, "stats": stats, "clients": connected}
        targets: dict[str, dict[str, Any]] = {
            "broadcast": {
                "path": spec.broadcast_path,
                "event": BROADCAST_EVENT,
                "body_for": broadcast_body,
                "expected_status": 202,
            },
            "per_user": {
                "path": spec.per_user_path,
                "event": NEW_EVENT,
                "body_for": lambda _n: per_user_body(users),
                "expected_status": 201,
            },
        }
        for metric, target in targets.items():
            result[metric] = await measure_repeated(quiet.setdefault(metric, []), **rig, **target)
        result["memory"]["after_load_rss_kb"] = memory_kb(server.pid).get("rss_kb")
        result["client_checks"] = {
            "parsed_frames": dict(stats.parsed),
            "problems": stats.problems,
            "seq_gaps_in_sample": stats.seq_gaps,
            "seq_out_of_order_in_sample": stats.seq_out_of_order,
            "unexpected_frames": stats.unexpected_frames,
            "closed_by_server": stats.closed_clients,
        }
    except Exception as exc:  # reported in the results; the other server still runs
        result["errors"].append(f"{type(exc).__name__}: {exc}")
        print(f"[fanout] {spec.name} failed: {exc}", file=sys.stderr, flush=True)
    finally:
        alive = server.process.poll() is None
        await shut_down(server, connected, session, http)
        result["exit_code"] = server.process.returncode
        result["was_alive_at_end"] = alive
        result["log_problems"] = log_problems(server.log_path)
        profile = bench.workdir / f"{spec.name}.prof"
        if profile.exists():
            result["profile"] = profile_summary(profile, 25)
    return result


# -- report ---------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where a level is missing."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# Figures compared between servers: name in results["ratios"] -> where each server has it.
RATIO_FIGURES: dict[str, tuple[str, str]] = {
    "broadcast_deliveries_per_s": ("broadcast", "deliveries_per_s"),
    "per_user_deliveries_per_s": ("per_user", "deliveries_per_s"),
    "kb_per_socket_rss": ("memory", "kb_per_socket_rss"),
    "connected_rss_kb": ("memory", "connected_rss_kb"),
    "broadcast_server_cpu_us_per_delivery": ("broadcast", "server_cpu_us_per_delivery"),
    "per_user_server_cpu_us_per_delivery": ("per_user", "server_cpu_us_per_delivery"),
    "connects_per_s": ("connect", "per_s"),
    "server_cpu_us_per_connect": ("connect", "server_cpu_us_per_connect"),
}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """notifyhub's figures as ratios to each peer's (``vs_node``, ``vs_stock``) and the
    targets of issue 12."""
    servers = results["servers"]
    hub = servers.get("notifyhub", {})
    ratios = {
        f"vs_{peer}": {
            name: ratio(dig(hub, *keys), dig(servers.get(peer), *keys))
            for name, keys in RATIO_FIGURES.items()
        }
        for peer in PEERS
    }

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    kb = dig(hub, "memory", "kb_per_socket_rss")
    targets = {
        "broadcast_1x_node": at_least(
            ratios["vs_node"]["broadcast_deliveries_per_s"], TARGET_BROADCAST_VS_NODE
        ),
        "broadcast_5x_stock": at_least(
            ratios["vs_stock"]["broadcast_deliveries_per_s"], TARGET_BROADCAST_VS_STOCK
        ),
        "per_user_2x_node": at_least(
            ratios["vs_node"]["per_user_deliveries_per_s"], TARGET_PER_USER_VS_NODE
        ),
        "idle_socket_at_most_20kb": None if kb is None else kb <= TARGET_KB_PER_SOCKET,
    }
    return {"ratios": ratios, "targets_met": targets}


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def table_header() -> list[str]:
    return [
        "metric",
        *(SERVER_TITLES[name] for name in ("notifyhub", *PEERS)),
        *(f"notifyhub / {SERVER_TITLES[peer].split()[0]}" for peer in PEERS),
        "target (issue 12)",
    ]


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row per figure: each server's value, notifyhub's ratio to each peer, the target."""
    servers = results["servers"]
    summary = summarize(results)  # recomputed, so older results files render too
    ratios, met = summary["ratios"], summary["targets_met"]

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    def cell(name: str, show: Callable[[dict[str, Any]], str]) -> str:
        server = servers.get(name)
        if server is None:
            return "not run"
        if server.get("skipped"):
            return "skipped"
        return show(server)

    def value(section: str, key: str, scale: float = 1.0) -> Callable[[dict[str, Any]], str]:
        def show(server: dict[str, Any]) -> str:
            found = dig(server, section, key)
            return fmt(None if found is None else found * scale)

        return show

    def util(section: str) -> Callable[[dict[str, Any]], str]:
        def show(server: dict[str, Any]) -> str:
            cpu = dig(server, section, "server_cpu_util")
            gen = dig(server, section, "loadgen_cpu_util")
            other = dig(server, section, "other_cpu_util")
            if cpu is None:
                return "n/a"
            return f"{cpu:.0%} / {gen:.0%} / {other or 0:.0%}"

        return show

    def rate(section: str) -> Callable[[dict[str, Any]], str]:
        def show(server: dict[str, Any]) -> str:
            median = fmt(dig(server, section, "deliveries_per_s"))
            every = [v for v in dig(server, section, "deliveries_per_s_all") or [] if v is not None]
            if len(every) < 2:
                return median
            return f"{median} ({fmt(min(every))}-{fmt(max(every))})"

        return show

    def row(
        label: str, show: Callable[[dict[str, Any]], str], figure: str, target: str
    ) -> list[str]:
        compared = [fmt(ratios[f"vs_{peer}"].get(figure), "x") if figure else "" for peer in PEERS]
        return [label, *(cell(n, show) for n in ("notifyhub", *PEERS)), *compared, target]

    n = results["params"]["clients"]
    return [
        row(
            f"broadcast to {n} sockets, deliveries/s (range)",
            rate("broadcast"),
            "broadcast_deliveries_per_s",
            f">= 1x Node: {mark(met['broadcast_1x_node'])}; "
            f">= 5x stock: {mark(met['broadcast_5x_stock'])}",
        ),
        row(
            f"one stored notification per user ({n} users), deliveries/s (range)",
            rate("per_user"),
            "per_user_deliveries_per_s",
            f">= 2x Node: {mark(met['per_user_2x_node'])}",
        ),
        row(
            "idle memory per socket (RSS delta / N), KB",
            value("memory", "kb_per_socket_rss"),
            "kb_per_socket_rss",
            f"<= 20 KB: {mark(met['idle_socket_at_most_20kb'])}",
        ),
        row(
            "idle memory per socket (PSS delta / N), KB",
            value("memory", "kb_per_socket_pss"),
            "",
            "",
        ),
        row(
            f"server RSS with {n} clients, MB",
            value("memory", "connected_rss_kb", 1 / 1024),
            "connected_rss_kb",
            "",
        ),
        row("broadcast: CPU busy, server / load generator / other", util("broadcast"), "", ""),
        row("per user: CPU busy, server / load generator / other", util("per_user"), "", ""),
        row(
            "server CPU per delivery, broadcast (us)",
            value("broadcast", "server_cpu_us_per_delivery"),
            "broadcast_server_cpu_us_per_delivery",
            "",
        ),
        row(
            "server CPU per delivery, per user (us)",
            value("per_user", "server_cpu_us_per_delivery"),
            "per_user_server_cpu_us_per_delivery",
            "",
        ),
        row("connects/s (JWT check + rooms)", value("connect", "per_s"), "connects_per_s", ""),
        row(
            "server CPU per connect (us)",
            value("connect", "server_cpu_us_per_connect"),
            "server_cpu_us_per_connect",
            "",
        ),
    ]


def run_facts(results: dict[str, Any]) -> tuple[str, str]:
    """ "Run <date> on <machine>, <versions>." and "Hub at commit `<sha>`" for a doc header."""
    machine = results["machine"]
    packages = machine["packages"]
    code = results.get("code") or {}
    commit = str(code.get("commit") or "?")[:12]
    dirty = " with uncommitted changes" if code.get("uncommitted_hub_changes") else ""
    return (
        f"Run {results['date']} on {machine['nproc']} cores ({machine['cpu_model']}), "
        f"Python {machine['python']}, python-socketio {packages['python-socketio']}, "
        f"python-engineio {packages['python-engineio']}, aiohttp {packages['aiohttp']}"
        f"{node_facts_text(results.get('node'))}.",
        f"Hub at commit `{commit}`{dirty}.",
    )


def node_facts_text(node: dict[str, Any] | None) -> str:
    """ ", Node v20.1.0 (socket.io 4.8.4, ...)" for a doc header; empty without the Node peer."""
    if not node or not node.get("version"):
        return ""
    packages = ", ".join(f"{name} {version}" for name, version in node["packages"].items())
    return f", Node {node['version']} ({packages})"


def markdown_table(results: dict[str, Any]) -> str:
    params = results["params"]
    ran, hub_commit = run_facts(results)
    header = [
        f"{ran} {params['clients']} clients, {params['rounds']} rounds x {params['pipeline']} "
        f"pipelined triggers, median of {params.get('repeats', 1)} measurements, "
        f"Redis manager {'on' if params['redis'] else 'off'}, "
        f"server on CPU {params['server_cpu']}, load generator on CPU {params['client_cpu']}, "
        f"stock server loop: {params['stock_loop']}. {hub_commit} "
        f"Raw numbers: `{params['output']}`.",
        "",
        f"| {' | '.join(table_header())} |",
        "|" + "---|" * len(table_header()),
    ]
    rows = [f"| {' | '.join(row)} |" for row in table_rows(results)]
    notes = [""]
    for name in SERVER_NAMES:
        server = results["servers"].get(name, {})
        if server.get("skipped"):
            notes.append(f"{SERVER_TITLES[name]} was skipped: {server['skipped']}.")
            continue
        trouble = list(server.get("errors") or [])
        for section in ("broadcast", "per_user"):
            part = server.get(section) or {}
            if part.get("timed_out"):
                trouble.append(f"{section}: timed out waiting for deliveries")
            if part.get("clients_missing_some"):
                trouble.append(f"{section}: {part['clients_missing_some']} clients missed some")
            if part.get("clients_with_duplicates"):
                trouble.append(f"{section}: {part['clients_with_duplicates']} clients got extra")
            if part.get("http_errors"):
                trouble.append(f"{section}: trigger errors {part['http_errors'][:3]}")
        checks = server.get("client_checks") or {}
        trouble.extend(checks.get("problems") or [])
        for section, waits in (server.get("machine_quiet_before") or {}).items():
            busy = [w.get("busy_cores") for w in waits if not w.get("quiet")]
            if busy:
                trouble.append(
                    f"machine busy before {len(busy)} {section} run(s) ({busy} cores in use "
                    "by other processes): figures are pessimistic"
                )
        if checks.get("seq_out_of_order_in_sample") and name != "notifyhub":
            notes.append(
                f"{SERVER_TITLES[name]} delivered {checks['seq_out_of_order_in_sample']} "
                "sampled notifications out of per-user order (concurrent creates interleave "
                "their per-user emits); notifyhub keeps per-user seq order."
            )
        if trouble:
            notes.append(f"Problems seen with {name}: " + "; ".join(trouble[:8]) + ".")
    return "\n".join(header + rows + notes).rstrip() + "\n"


DOC_TEMPLATE = """# Benchmarks

Scripts in `benchmarks/` are run by hand (they are not timed tests). Each writes its raw
numbers to `benchmarks/results/*.json` and the table below.

## Socket.IO fan-out: `benchmarks/fanout.py`

What it measures, for notifyhub and for a stock python-socketio server
(`benchmarks/stock_server.py`) in the same run, one server at a time:

- **broadcast**: deliveries/s of a tenant-wide `broadcast` to N connected sockets
  (notifyhub: `POST /api/broadcasts/`; stock: one `sio.emit("broadcast", ...,
  room=tenant_room)` behind `POST /bench/broadcast`);
- **one notification per user**: deliveries/s when one request stores one notification
  for each of the N users and pushes `notification:new` to each (notifyhub:
  `POST /api/notifications/`; stock: one multi-row `INSERT ... RETURNING` with asyncpg,
  then one awaited `sio.emit("notification:new", obj, room=user_room)` per user, the way
  the python-socketio docs do it);
- **idle memory per socket**: server RSS with N idle clients minus its RSS after warm-up
  with none, divided by N (PSS from `smaps_rollup` too). No permessage-deflate: the load
  generator does not offer it, as most non-browser clients do not; browsers do, which
  costs more memory per socket on any server.

Method:

- One server process pinned to one core (`taskset`), the load generator pinned to the
  other; PostgreSQL and Redis are not pinned and take CPU from whichever core is free.
  With `--redis` (the default) both servers use a Redis Socket.IO manager, as in
  production where several `serve` processes form one hub; each server gets its own
  channel.
- N clients are distinct users (`u0`..`uN-1`) of one tenant, each authenticated with an
  HS256 JWT in the connect packet. The load generator is a minimal Socket.IO client on
  aiohttp websockets (`EIO=4`, websocket transport only): it answers engine.io pings,
  counts `42/notifications,["event",...` frames by event name, and parses a sample of
  them (every `--sample-every`th client, plus the first frames) to check the documented
  shapes, the recipient and seq order.
- Each round sends `--pipeline` triggers back to back and waits until every client has
  received all of them; deliveries/s = N x triggers / (first trigger sent -> last
  frame received). Each metric is measured `--repeats` times (after waiting for the
  machine to be idle) and the median is reported; every figure is in the JSON. Every
  client's count is checked afterwards for missing or extra deliveries.
- Before measuring, each server is warmed up (10 clients, a few broadcasts and creates,
  then disconnected) so imports, pools and Redis subscriptions are in place.
- The CPU rows say what limits a number: a server near 100% of its core is server-bound;
  a load generator near 100% means the client side is the limit and the server figure is
  a lower bound.

The stock server does less than notifyhub per notification (no per-user `seq`
allocation, no unread counter, no ordered-delivery bookkeeping): its `seq` is the row id.

Run (PostgreSQL on 127.0.0.1:5432 with trust auth and Redis on 127.0.0.1:6379; a fresh
database is created and dropped):

```sh
.venv/bin/python benchmarks/fanout.py --quick   # smoke run: 200 clients, 2 rounds
.venv/bin/python benchmarks/fanout.py           # full run: 1,000 clients; updates this page
.venv/bin/python benchmarks/fanout.py --help
```

### Latest results

{start}
(not run yet)
{end}
"""


def update_doc(
    path: Path,
    section: str,
    *,
    start: str = DOC_START,
    end: str = DOC_END,
    intro: str = "### Latest results",
) -> None:
    """Rewrite what lies between ``start`` and ``end`` in ``path``; where the markers are
    missing, append ``intro`` and the markers (other benchmarks pass their own)."""
    replace_section(
        path,
        section,
        start=start,
        end=end,
        missing=f"{intro.rstrip()}\n\n{start}\n{end}\n",
        new_file=DOC_TEMPLATE.format(start=DOC_START, end=DOC_END),
    )


def print_table(results: dict[str, Any]) -> None:
    rows = [table_header(), *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
        if number == 0:
            print("  ".join("-" * w for w in widths))


# -- main -----------------------------------------------------------------------------


def server_specs(
    bench: Bench, *, hub_db: str, stock_db: str, redis_url: str | None
) -> dict[str, ServerSpec]:
    args = bench.args
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYHUB_")}
    pythonpath = os.pathsep.join(filter(None, [str(REPO), inherited.get("PYTHONPATH")]))
    run_id = bench.tenant
    hub_env = {
        **inherited,
        "PYTHONPATH": pythonpath,
        "NOTIFYHUB_ENV": "test",
        "NOTIFYHUB_LOG_LEVEL": "WARNING",
        "NOTIFYHUB_DATABASE_URL": hub_db,
        "NOTIFYHUB_JWT_SECRET": bench.secret,
        "NOTIFYHUB_JWT_ALGORITHMS": "HS256",
        "NOTIFYHUB_SOCKETIO_CHANNEL": f"bench-hub-{run_id}",
        "NOTIFYHUB_AUTO_MIGRATE": "false",
        "NOTIFYHUB_NOTIFICATION_MAX_RECIPIENTS": str(max(1000, args.clients)),
    }
    if redis_url:
        hub_env["NOTIFYHUB_REDIS_URL"] = redis_url
    stock_command = [
        sys.executable,
        str(REPO / "benchmarks" / "stock_server.py"),
        "--port",
        "{port}",
        "--database-url",
        stock_db,
        "--channel",
        f"bench-stock-{run_id}",
        "--loop",
        args.stock_loop,
    ]
    if redis_url:
        stock_command += ["--redis-url", redis_url]
    node_command = [
        shutil.which("node") or "node",
        str(NODE_DIR / "server.js"),
        "--port",
        "{port}",
        "--database-url",
        stock_db,
        "--channel",
        f"bench-node-{run_id}",
    ]
    if redis_url:
        node_command += ["--redis-url", redis_url]
    hub_command = [sys.executable, "-m", "hub", "serve", "--host", HOST, "--port", "{port}"]

    def peer(name: str, command: list[str], loop: str) -> ServerSpec:
        """A peer: the same trigger routes, and no per-user order promised (concurrent
        creates may emit a user's rows out of order), so out-of-order frames are counted."""
        env = {**inherited, "BENCH_JWT_SECRET": bench.secret}
        return ServerSpec(
            name=name,
            command=command,
            env=env,
            broadcast_path="/bench/broadcast",
            per_user_path="/bench/per-user",
            loop=loop,
            strict_seq=False,
        )

    if args.profile:
        # V8's profile (a .cpuprofile for Chrome's DevTools), not summarised like cProfile's.
        node_command[1:1] = ["--cpu-prof", "--cpu-prof-dir", str(bench.workdir)]
        hub_command[1:1] = ["-m", "cProfile", "-o", str(bench.workdir / "notifyhub.prof")]
        stock_command[1:1] = ["-m", "cProfile", "-o", str(bench.workdir / "stock.prof")]
    return {
        "notifyhub": ServerSpec(
            name="notifyhub",
            command=hub_command,
            env=hub_env,
            broadcast_path="/api/broadcasts/",
            per_user_path="/api/notifications/",
            loop="uvloop (hub default)",
            strict_seq=True,
        ),
        "stock": peer("stock", stock_command, args.stock_loop),
        "node": peer("node", node_command, "libuv"),
    }


@contextlib.asynccontextmanager
async def bench_servers(bench: Bench, prefix: str) -> AsyncIterator[dict[str, ServerSpec]]:
    """The specs of every server on a fresh database named ``{prefix}_<random>``: migrated for
    the hub, with the peers' table; dropped at the end, also on errors."""
    args = bench.args
    name = f"{prefix}_{secrets.token_hex(4)}"
    await create_database(args.pg_admin_url, name)
    try:
        peer_db = database_url(args.pg_admin_url, name, "postgresql")
        specs = server_specs(
            bench,
            hub_db=database_url(args.pg_admin_url, name, "postgresql+asyncpg"),
            stock_db=peer_db,
            redis_url=args.redis_url if args.redis else None,
        )
        await asyncio.to_thread(migrate, specs["notifyhub"].env, bench.workdir)
        await admin_execute(peer_db, PEER_TABLE)
        yield specs
    finally:
        with contextlib.suppress(Exception):
            await drop_database(args.pg_admin_url, name)


def node_unavailable() -> str | None:
    """Why the Node peer cannot run on this machine, or None when it can; installs its npm
    packages (``npm ci`` in benchmarks/node) when they are missing."""
    node = shutil.which("node")
    if node is None:
        return f"no `node` on PATH (Node.js >= {NODE_MAJOR_MIN} runs benchmarks/node/server.js)"
    version = subprocess.run(  # noqa: S603 - node, fixed arguments
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    major = version.lstrip("v").split(".", 1)[0]
    if not major.isdigit() or int(major) < NODE_MAJOR_MIN:
        return f"node {version or '(no version)'} is older than {NODE_MAJOR_MIN}"
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    if all((NODE_DIR / "node_modules" / name / "package.json").exists() for name in wanted):
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "benchmarks/node/node_modules is missing and there is no `npm` to install it"
    print("[fanout] node: installing benchmarks/node's packages (npm ci) ...", flush=True)
    installed = subprocess.run(  # noqa: S603 - npm, fixed arguments
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if installed.returncode != 0:
        return f"npm ci in benchmarks/node failed: {installed.stderr.strip()[-300:]}"
    return None


def node_facts() -> dict[str, Any]:
    """Node's version and the installed versions of the peer's packages."""
    node = shutil.which("node")
    if node is None:
        return {}
    version = subprocess.run(  # noqa: S603 - node, fixed arguments
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    packages: dict[str, str | None] = {}
    for name in json.loads((NODE_DIR / "package.json").read_text())["dependencies"]:
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        packages[name] = json.loads(manifest.read_text())["version"] if manifest.exists() else None
    return {"version": version, "packages": packages}


def runnable_servers(names: Sequence[str], results: dict[str, Any]) -> list[str]:
    """``names`` less the Node peer when it cannot run here: then it says why, on stdout and
    in ``results["servers"]["node"]["skipped"]``; with it, ``results["node"]`` is filled."""
    runnable = list(names)
    if "node" in runnable:
        reason = node_unavailable()
        if reason is None:
            results["node"] = node_facts()
        else:
            print(f"[fanout] node: skipped: {reason}", flush=True)
            results["servers"]["node"] = {"skipped": reason}
            runnable.remove("node")
    return runnable


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench.start(args, "fanout")
    results: dict[str, Any] = {
        **results_header("fanout"),
        "params": {
            "clients": args.clients,
            "rounds": args.rounds,
            "pipeline": args.pipeline,
            "repeats": args.repeats,
            "redis": args.redis,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "stock_loop": args.stock_loop,
            "quick": args.quick,
            "profile": args.profile,
            "servers": args.servers,
            "output": args.output,
            "payload_bytes": {
                "broadcast_request": len(json.dumps(broadcast_body(0))),
                "title": len(TITLE),
                "body": len(BODY),
            },
        },
        "servers": {},
        "logs": str(bench.workdir),
    }
    async with bench_servers(bench, "notifyhub_bench") as specs:
        for name in runnable_servers(args.servers.split(","), results):
            spec = specs[name]
            print(f"[fanout] {name}: {args.clients} clients ...", flush=True)
            try:
                async with asyncio.timeout(args.max_seconds_per_server):
                    results["servers"][name] = await run_server_bench(bench, spec)
            except Exception as exc:
                results["servers"].setdefault(name, {}).setdefault("errors", []).append(
                    f"{type(exc).__name__}: {exc}"
                )
                print(f"[fanout] {name} failed: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(1)
    results.update(summarize(results))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Socket.IO fan-out benchmark: notifyhub vs Node socket.io 4 and a stock "
            "python-socketio server (broadcast and per-user deliveries/s, idle memory per "
            "socket, connects/s). Loopback only."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=1000, help="websocket clients (users)")
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds per metric")
    parser.add_argument(
        "--pipeline", type=int, default=4, help="triggers sent back to back per round"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="measure each metric this many times; the median is reported",
    )
    add_rig_options(parser, connect_timeout=15.0)
    parser.add_argument("--output", help="results JSON (default benchmarks/results/fanout.json)")
    parser.add_argument(
        "--from-json",
        metavar="RESULTS",
        help="run nothing: print the table of a results file (and update the doc with "
        "--update-doc)",
    )
    add_doc_options(
        parser,
        "markdown file whose results section is rewritten",
        "rewrite the results table in --doc (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--stock-loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the stock server (aiohttp's run_app default is asyncio)",
    )
    parser.add_argument(
        "--servers",
        "--order",
        default=",".join(("notifyhub", "stock", "node")),
        help=f"servers to run, in this order (a subset of {','.join(SERVER_NAMES)}); "
        "node is skipped, saying why, when Node.js or npm is missing",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 200 clients, 2 rounds, 2 s quiet wait, no doc update",
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=60.0, help="seconds to wait for one round"
    )
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before RSS reads")
    parser.add_argument(
        "--settle-after", type=float, default=0.3, help="seconds to catch late frames"
    )
    parser.add_argument("--start-timeout", type=float, default=30.0, help="server start timeout")
    parser.add_argument(
        "--max-seconds-per-server", type=float, default=600.0, help="hard bound per server"
    )
    add_quiet_options(parser, 0.15, 60.0)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the servers under cProfile (slower; for finding the limit, no doc update)",
    )
    parser.add_argument(
        "--sample-every", type=int, default=50, help="parse every frame of every k-th client"
    )
    return parser


def apply_defaults(args: argparse.Namespace) -> None:
    """What --quick and --profile change, unless given explicitly."""
    # A short quiet wait too: a smoke run on a shared machine must still end within a minute.
    apply_quick(
        args, build_parser, {"clients": 200, "rounds": 2, "repeats": 1, "quiet_timeout": 2.0}
    )
    if args.update_doc is None:
        args.update_doc = not (args.quick or args.profile)
    if args.output is None:
        name = (
            "fanout-profile.json"
            if args.profile
            else ("fanout-quick.json" if args.quick else "fanout.json")
        )
        args.output = str(Path("benchmarks") / "results" / name)


def render_only(args: argparse.Namespace) -> int:
    """Print the table of a results file and, with --update-doc, rewrite the doc from it."""
    results = json.loads(Path(args.from_json).read_text())
    print_table(results)
    update_doc_if_asked(args, update_doc, markdown_table(results))
    return 0


def run_load_generator(
    args: argparse.Namespace,
    benchmark: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
) -> tuple[dict[str, Any], Path]:
    """Run ``benchmark(args)`` as the load generator: pinned to ``--client-cpu``, with open
    files for ``--clients``, on uvloop where installed; write its results to ``--output``."""
    cpus = os.sched_getaffinity(0)
    if args.client_cpu in cpus:
        os.sched_setaffinity(0, {args.client_cpu})
    if args.server_cpu == args.client_cpu:
        print("warning: server and load generator share a core", file=sys.stderr)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, 4 * args.clients + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    try:
        import uvloop

        results = uvloop.run(benchmark(args))
    except ImportError:
        results = asyncio.run(benchmark(args))

    output = Path(args.output)
    if not output.is_absolute():
        output = REPO / output
    write_results(output, results)
    return results, output


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_defaults(args)
    if args.from_json:
        return render_only(args)
    names = [n for n in args.servers.split(",") if n]
    if not names or any(n not in SERVER_NAMES for n in names):
        print(f"--servers takes a comma-separated subset of {SERVER_NAMES}", file=sys.stderr)
        return 2
    if min(args.clients, args.rounds, args.pipeline, args.repeats) < 1:
        print("--clients, --rounds, --pipeline and --repeats must be positive", file=sys.stderr)
        return 2
    results, output = run_load_generator(args, run)
    print()
    print_table(results)
    print(f"\nresults: {output}\nserver logs: {results['logs']}")
    update_doc_if_asked(args, update_doc, markdown_table(results))
    failed = any(server.get("errors") for server in results["servers"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
