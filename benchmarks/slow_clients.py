"""Slow-client benchmark: do clients that stop reading delay anybody else?

One ``serve`` process (pinned to one core) on PostgreSQL and Redis, N websocket clients of
one tenant (a load generator pinned to the other core), and a storm of large broadcasts
(``POST /api/broadcasts/``, a 5,000-character body and ~15 KB of data: ~20 KB frames) at
a steady rate. Each run has a fresh server and is done twice:

1. baseline: N reading clients, none stalled;
2. stalled: N - K reading clients and K clients that complete the Engine.IO + Socket.IO
   ``/notifications`` handshake and then never read again (``SO_RCVBUF`` 4096). They still
   answer pings blindly (an unsolicited ``3`` every few seconds, without reading), so only
   the hub's per-socket buffer limit can end them, not the ping timeout.

Reported for the reading clients: deliveries received / expected (must be 100%), latency of
each delivery (the load generator's clock when the POST is sent -> frame read by the
client) p50/p99/max, time from the first POST to the last delivery; for the server: VmRSS
sampled every 50 ms (peak), stalled clients dropped (``notifyhub_slow_consumer_disconnects_
total`` on its ``/metrics``), CPU of server and load generator. With ``--repeats`` the two
runs alternate and medians are reported.

Load goes to 127.0.0.1 only; every wait has a timeout; servers are stopped by PID and the
benchmark database is dropped, also on errors. Not a test: run it by hand.

    .venv/bin/python benchmarks/slow_clients.py --quick   # smoke: 200 clients, 20 stalled
    .venv/bin/python benchmarks/slow_clients.py           # 1,000 clients, 100 stalled
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# The repository root holds ``benchmarks``; benchmarks.fanout, imported first, also takes
# this folder off sys.path, where benchmarks/email.py would shadow the standard ``email``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import benchmarks.fanout  # noqa: F401

# isort: split
import aiohttp

from benchmarks.database import create_database, database_url, drop_database
from benchmarks.fanout import (
    BROADCAST_EVENT,
    NAMESPACE,
    Bench,
    RawClient,
    RunningServer,
    ServerSpec,
    Stats,
    connect_all,
    fmt,
    log_problems,
    make_clients,
    migrate,
    results_header,
    run_facts,
    run_load_generator,
    server_specs,
    start_server,
    stop_server,
    trigger,
    update_doc,
    warm_up,
)
from benchmarks.machine import (
    REPO,
    CpuWindow,
    wait_for_quiet,
)
from benchmarks.report import update_doc_if_asked
from tests.harness.rawws import RawWebSocket, connect_socketio

TITLE_MARK = '"title":"storm-'
SCENARIOS = ("baseline", "stalled")
PEAKS = ("p99", "max")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# What the allocator may add to the bytes a stalled socket's buffer holds (freed buffers are
# kept by malloc for reuse, not returned to the kernel, so RSS stays at its peak).
ALLOCATOR_SLACK = 1.25
SLOW_METRIC = re.compile(
    r'^notifyhub_slow_consumer_disconnects_total\{transport="([^"]+)"\} ([0-9.e+]+)$', re.M
)
DOC_START = "<!-- slow-clients-results:start -->"
DOC_END = "<!-- slow-clients-results:end -->"
DOC_INTRO = """## Slow clients: `benchmarks/slow_clients.py`

Does a client that stops reading delay anybody else, or grow the process? One `serve`
(CPU 0) on PostgreSQL + Redis, N websocket clients of one tenant (load generator on CPU 1)
and a storm of large broadcasts (`POST /api/broadcasts/` at a steady rate, a 5,000-character
body and ~15 KB of data: ~20 KB frames), each run on a fresh server:

- **baseline**: N clients that read;
- **stalled**: N - K clients that read and K that complete the Engine.IO + Socket.IO
  `/notifications` handshake and then never read (`SO_RCVBUF` 4096). They keep answering
  pings blindly, so only the per-socket buffer limit (`NOTIFYHUB_SOCKET_MAX_BUFFER_BYTES`,
  default 1 MiB) can end them, not the ping timeout. The kernel absorbs a few MB per
  stalled loopback socket first (its send buffer grows toward `tcp_wmem`'s maximum, 4 MB
  here), so the hub's own buffer fills, and the socket is dropped, only after ~4 MB, about
  200 frames into the storm (the table says at which broadcast).

Latency of a delivery = the load generator's clock when it sends the POST -> the frame read
by a reading client (the same clock), so it includes the HTTP request, Redis and the load
generator's own queueing. Server memory is VmRSS sampled every 50 ms; dropped sockets are
`notifyhub_slow_consumer_disconnects_total` read from the server's `/metrics`. With
`--repeats` the two runs alternate and the medians are shown. "Within noise" means the
stalled runs' median p99 is at most the largest baseline p99 times (1 + `--tolerance`);
"memory bounded" means the stalled run's RSS peak is at most the baseline's plus K x
(buffer limit + one frame) x 1.25 (allocator slack). Before the buffer limit, one stalled
client froze delivery to everybody on its node (issue 10).

```sh
.venv/bin/python benchmarks/slow_clients.py --quick   # smoke: 200 clients, 20 stalled
.venv/bin/python benchmarks/slow_clients.py           # 1,000 clients, 100 stalled; this page
.venv/bin/python benchmarks/slow_clients.py --help
```

### Latest results"""


# -- clients ----------------------------------------------------------------------------


@dataclass
class StormStats(Stats):
    """fanout's counters, plus the latency of every broadcast frame of the storm."""

    sent: dict[int, float] = field(default_factory=dict)
    latencies: dict[int, list[float]] = field(default_factory=dict)  # by broadcast number
    unknown_broadcasts: int = 0

    def record(self, index: int, user: str, tenant: str, event: str, frame: str) -> None:
        arrived = time.perf_counter()
        if event == BROADCAST_EVENT:
            number = storm_number(frame)
            sent = self.sent.get(number) if number is not None else None
            if number is None or sent is None:
                self.unknown_broadcasts += 1
            else:
                self.latencies.setdefault(number, []).append(arrived - sent)
        super().record(index, user, tenant, event, frame)


def storm_number(frame: str) -> int | None:
    """The storm number in a ``broadcast`` frame's title, without parsing its ~20 KB."""
    start = frame.find(TITLE_MARK)
    if start < 0:
        return None
    start += len(TITLE_MARK)
    with contextlib.suppress(ValueError):
        return int(frame[start : frame.find('"', start)])
    return None


class StalledClient(RawClient):
    """Completes the handshake on a raw socket with a tiny receive buffer, then never reads;
    it writes a pong every ``pong_every`` seconds so that the ping timeout cannot end it."""

    receive_buffer = 4096
    pong_every: float | None = 5.0
    socket: RawWebSocket | None = None

    async def connect(self, session: aiohttp.ClientSession, port: int, limit: float) -> None:
        try:
            async with asyncio.timeout(limit):
                self.socket = await connect_socketio(
                    port, NAMESPACE, self.token, receive_buffer=self.receive_buffer
                )
        except AssertionError as exc:  # connect_socketio asserts on the handshake
            raise ConnectionError(f"handshake: {exc}") from exc
        if self.pong_every:
            self.reader = asyncio.create_task(self._pong(self.socket, self.pong_every))

    @staticmethod
    async def _pong(socket: RawWebSocket, every: float) -> None:
        while not socket.writer.is_closing():
            await asyncio.sleep(every)
            with contextlib.suppress(OSError, RuntimeError):
                socket.send_text("3")

    async def close(self) -> None:
        await super().close()
        if self.socket is not None:
            self.socket.close()


# -- one run ----------------------------------------------------------------------------


def storm_body(number: int, body: str, blob: str) -> dict[str, Any]:
    return {
        "title": f"storm-{number}",
        "body": body,
        "data": {"n": number, "sent_unix": time.time(), "blob": blob},
    }


def percentiles_ms(values: Sequence[float], expected: int | None = None) -> dict[str, Any]:
    """Percentiles in ms over ``expected`` deliveries (default: those measured); one that
    never arrived counts as infinitely late, so a percentile that falls on it is None."""
    total = len(values) if expected is None else max(expected, len(values))
    ordered = sorted(values)

    def at(q: float) -> float | None:
        index = min(total - 1, int(q * total))
        return round(1000 * ordered[index], 2) if index < len(ordered) else None

    return {
        "p50": at(0.50) if total else None,
        "p90": at(0.90) if total else None,
        "p99": at(0.99) if total else None,
        "max": at(1.0) if total else None,
        "mean_of_arrived": round(1000 * statistics.fmean(ordered), 2) if ordered else None,
        "never_arrived": total - len(ordered),
    }


def vm_rss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def tcp_buffers_kb() -> int | None:
    """Memory in the kernel's TCP buffers, whole machine (``/proc/net/sockstat``, pages):
    what stalled sockets hold beyond the hub's own buffer, outside its RSS."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1]) * PAGE_KB
    return None


async def sample_memory(pid: int, every: float, rss: list[int], tcp: list[int]) -> None:
    while True:
        for into, value in ((rss, vm_rss_kb(pid)), (tcp, tcp_buffers_kb())):
            if value is not None:
                into.append(value)
        await asyncio.sleep(every)


async def slow_consumer_drops(http: aiohttp.ClientSession, server: RunningServer) -> dict[str, int]:
    async with http.get(
        f"{server.base_url}/metrics", timeout=aiohttp.ClientTimeout(total=10)
    ) as response:
        text = await response.text()
    return {kind: int(float(value)) for kind, value in SLOW_METRIC.findall(text)}


async def storm(
    bench: Bench, server: RunningServer, http: aiohttp.ClientSession, stats: StormStats
) -> dict[str, Any]:
    """``--broadcasts`` POSTs at ``--rate`` per second, each in its own task (a slow answer
    does not hold up the schedule)."""
    args = bench.args
    url = f"{server.base_url}/api/broadcasts/"
    body, blob = "y" * args.body_chars, "x" * args.data_chars

    async def post(number: int) -> tuple[int, float]:
        stats.sent[number] = time.perf_counter()
        return await trigger(http, url, bench.service_token, storm_body(number, body, blob))

    tasks: list[asyncio.Task[tuple[int, float]]] = []
    lags: list[float] = []
    started, started_unix = time.perf_counter(), time.time()
    for number in range(args.broadcasts):
        due = started + number / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(time.perf_counter() - due)
        tasks.append(asyncio.create_task(post(number)))
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    sending = time.perf_counter() - started
    errors = [
        f"{type(a).__name__}: {a}" if isinstance(a, BaseException) else f"HTTP {a[0]}"
        for a in answers
        if isinstance(a, BaseException) or a[0] != 202
    ]
    post_seconds = [a[1] for a in answers if not isinstance(a, BaseException)]
    return {
        "started": started,
        "started_unix": started_unix,
        "sending_seconds": round(sending, 3),
        "schedule_lag_ms_max": round(1000 * max(lags), 2) if lags else None,
        "post_ms": percentiles_ms(post_seconds),
        "http_errors": errors[:10],
        "http_error_count": len(errors),
    }


async def connect_clients(
    bench: Bench,
    server: RunningServer,
    session: aiohttp.ClientSession,
    stats: StormStats,
    stalled_count: int,
) -> tuple[list[RawClient], list[StalledClient], dict[str, Any]]:
    """The reading clients, then the stalled ones; raises unless all of them connected."""
    args = bench.args
    StalledClient.pong_every = args.stalled_pong_every or None
    StalledClient.receive_buffer = args.stalled_receive_buffer
    started = time.perf_counter()
    groups = [
        await connect_all(
            make_clients(bench, prefix, count, stats, kind),
            session,
            server.port,
            concurrency=args.connect_concurrency,
            limit=args.connect_timeout,
        )
        for kind, prefix, count in (
            (RawClient, "r", stats.size),
            (StalledClient, "s", stalled_count),
        )
    ]
    (readers, failures), (stalled, stalled_failures) = groups
    failures += stalled_failures
    info = {
        "readers": len(readers),
        "stalled": len(stalled),
        "failures": len(failures),
        "failure_samples": failures[:5],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if failures:
        await asyncio.gather(*(c.close() for c in readers + stalled))
        raise RuntimeError(f"connects failed: {failures[:3]}")
    return readers, [c for c in stalled if isinstance(c, StalledClient)], info


def drop_times(log_path: Path, storm_started: float) -> list[float]:
    """Seconds after the storm's start at which the server logged a slow-consumer drop."""
    seconds: list[float] = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if "dropped: it does not read" in line:
                with contextlib.suppress(ValueError):
                    logged = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    seconds.append(round(logged - storm_started, 3))
    return seconds


def phases(stats: StormStats, started: float, dropped_at: Sequence[float]) -> dict[str, Any] | None:
    """Latency of the broadcasts sent while the stalled clients were still connected (before
    the first drop) and of those sent after it."""
    if not dropped_at:
        return None
    first = started + min(dropped_at)
    parts: dict[str, list[float]] = {"while_stalled_connected": [], "after_drops": []}
    for number, seconds in stats.latencies.items():
        key = "while_stalled_connected" if stats.sent[number] < first else "after_drops"
        parts[key] += seconds
    return {
        "first_drop_at_broadcast": sum(1 for s in stats.sent.values() if s < first),
        **{key: percentiles_ms(values) for key, values in parts.items()},
    }


def per_second(stats: StormStats, started: float) -> list[dict[str, Any]]:
    """p99 and max latency of the broadcasts sent in each second of the storm: when a spike
    happened (a drop, another job on the machine)."""
    seconds: dict[int, list[float]] = {}
    for number, values in stats.latencies.items():
        seconds.setdefault(int(stats.sent[number] - started), []).extend(values)
    return [
        {"second": second, **{k: v for k, v in percentiles_ms(values).items() if k in PEAKS}}
        for second, values in sorted(seconds.items())
    ]


async def measure_storm(
    bench: Bench,
    server: RunningServer,
    http: aiohttp.ClientSession,
    stats: StormStats,
    stalled: Sequence[StalledClient],
) -> dict[str, Any]:
    """The storm, the wait for its last delivery, and what the server and clients show."""
    args = bench.args
    result: dict[str, Any] = {"errors": []}
    drops_before = await slow_consumer_drops(http, server)
    rss_before = vm_rss_kb(server.pid)
    rss: list[int] = []
    tcp: list[int] = []
    tcp_before = tcp_buffers_kb()
    sampler = asyncio.create_task(sample_memory(server.pid, 0.05, rss, tcp))
    cpu = CpuWindow.begin(server.pid)
    stats.arm(BROADCAST_EVENT, stats.size * args.broadcasts)
    try:
        sent = await storm(bench, server, http, stats)
        try:
            async with asyncio.timeout(args.wait_timeout):
                await stats.reached.wait()
            finished = stats.reached_at
        except TimeoutError:
            finished = time.perf_counter()
            result["errors"].append(f"not every delivery arrived within {args.wait_timeout}s")
    finally:
        sampler.cancel()
    (cpu_server,), cpu_loadgen, busy, _cores = cpu.end()
    other = max(0.0, busy - cpu_server - cpu_loadgen)
    await asyncio.sleep(args.settle_after)  # late or duplicate frames
    drops_after = await slow_consumer_drops(http, server)
    # Counted before the stalled sockets are read below: that would unblock a server that
    # waits for them, and its late deliveries must not count.
    counts = list(stats.per_client.get(BROADCAST_EVENT, [0] * stats.size))
    expected = stats.size * args.broadcasts
    delivered = stats.totals.get(BROADCAST_EVENT, 0)
    started = sent.pop("started")
    elapsed = finished - started
    dropped_at = drop_times(server.log_path, sent.pop("started_unix"))
    result |= {
        "storm": sent,
        "expected": expected,
        "delivered": delivered,
        "delivered_pct": round(100 * delivered / expected, 3) if expected else None,
        "clients_missing_some": sum(1 for c in counts if c < args.broadcasts),
        "clients_with_duplicates": sum(1 for c in counts if c > args.broadcasts),
        "broadcasts_not_reaching_all": sum(
            1 for n in range(args.broadcasts) if len(stats.latencies.get(n, ())) != stats.size
        ),
        "unknown_broadcast_frames": stats.unknown_broadcasts,
        "latency_ms": percentiles_ms([s for n in stats.latencies.values() for s in n], expected),
        "latency_ms_by_phase": phases(stats, started, dropped_at),
        "latency_ms_by_second": per_second(stats, started),
        "seconds_to_complete": round(elapsed, 3),
        "rss_kb": {
            "before_storm": rss_before,
            "peak": max(rss, default=None),
            "after": vm_rss_kb(server.pid),
            "samples": len(rss),
        },
        "kernel_tcp_buffers_kb": {"before_storm": tcp_before, "peak": max(tcp, default=None)},
        "slow_consumer_disconnects": {
            kind: drops_after.get(kind, 0) - drops_before.get(kind, 0)
            for kind in sorted(set(drops_before) | set(drops_after))
        },
        "drops_logged_s_after_storm_start": {
            "count": len(dropped_at),
            "first": min(dropped_at, default=None),
            "last": max(dropped_at, default=None),
        },
        "cpu": {
            "server_util": round(cpu_server / elapsed, 3),
            "loadgen_util": round(cpu_loadgen / elapsed, 3),
            "other_util": round(other / elapsed, 3),
        },
        "client_checks": {
            "parsed_frames": dict(stats.parsed),
            "problems": stats.problems,
            "unexpected_frames": stats.unexpected_frames,
            "closed_by_server": stats.closed_clients,
        },
    }
    closed = await asyncio.gather(
        *(c.socket.closed_by_server(timeout=2) for c in stalled if c.socket is not None)
    )
    result["stalled_closed_by_server"] = sum(closed)
    return result


async def run_once(bench: Bench, spec: ServerSpec, stalled_count: int) -> dict[str, Any]:
    """One fresh server, its clients and one storm."""
    args = bench.args
    result: dict[str, Any] = {"readers": args.clients - stalled_count, "stalled": stalled_count}
    result["machine_quiet_before"] = await wait_for_quiet(args.quiet_threshold, args.quiet_timeout)
    server = await start_server(
        spec, cpu=args.server_cpu, workdir=bench.workdir, start_within=args.start_timeout
    )
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    stats = StormStats(size=args.clients - stalled_count, sample_every=args.sample_every)
    connected: list[RawClient] = []
    try:
        await warm_up(bench, server, session, http)
        readers, stalled, result["connect"] = await connect_clients(
            bench, server, session, stats, stalled_count
        )
        connected += [*readers, *stalled]
        await asyncio.sleep(args.settle)
        result.update(await measure_storm(bench, server, http, stats, stalled))
    except Exception as exc:  # reported in the results; the other runs still happen
        result.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
        print(f"[slow_clients] run failed: {exc}", file=sys.stderr, flush=True)
    finally:
        await asyncio.gather(*(c.close() for c in connected))
        await session.close()
        await http.close()
        result["was_alive_at_end"] = server.process.poll() is None
        await asyncio.to_thread(stop_server, server)
        result["exit_code"] = server.process.returncode
        result["log_problems"] = log_problems(server.log_path)
    return result


# -- report -----------------------------------------------------------------------------


def median_of(runs: Sequence[dict[str, Any]], *keys: str) -> float | None:
    """The median over runs of a nested figure; None when any run lacks it (a failed run, a
    percentile that fell on a delivery that never arrived)."""
    values: list[float] = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, int | float):
            return None
        values.append(value)
    return round(statistics.median(values), 2) if values else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    params = results["params"]
    frame_kb = params["frame_bytes"] / 1024
    summary: dict[str, Any] = {}
    for name in SCENARIOS:
        runs = results["runs"][name]
        summary[name] = {
            "runs": len(runs),
            "delivered_pct_min": min((r.get("delivered_pct") or 0.0 for r in runs), default=None),
            "delivered_worst": min(
                ((r.get("delivered") or 0, r.get("expected") or 0) for r in runs),
                key=lambda pair: pair[0] / pair[1] if pair[1] else 0.0,
                default=(0, 0),
            ),
            "latency_ms_p50": median_of(runs, "latency_ms", "p50"),
            "latency_ms_p99": median_of(runs, "latency_ms", "p99"),
            "latency_ms_max": median_of(runs, "latency_ms", "max"),
            "latency_ms_p99_before_drops": median_of(
                runs, "latency_ms_by_phase", "while_stalled_connected", "p99"
            ),
            "latency_ms_p99_after_drops": median_of(
                runs, "latency_ms_by_phase", "after_drops", "p99"
            ),
            "first_drop_at_broadcast": median_of(
                runs, "latency_ms_by_phase", "first_drop_at_broadcast"
            ),
            "latency_ms_p99_all": [(r.get("latency_ms") or {}).get("p99") for r in runs],
            "seconds_to_complete": median_of(runs, "seconds_to_complete"),
            "rss_peak_kb_max": max(
                ((r.get("rss_kb") or {}).get("peak") or 0 for r in runs), default=None
            ),
            "rss_before_storm_kb": median_of(runs, "rss_kb", "before_storm"),
            "tcp_buffers_peak_kb": median_of(runs, "kernel_tcp_buffers_kb", "peak"),
            "dropped": [
                (r.get("slow_consumer_disconnects") or {}).get("websocket", 0) for r in runs
            ],
            "server_cpu_util": median_of(runs, "cpu", "server_util"),
            "loadgen_cpu_util": median_of(runs, "cpu", "loadgen_util"),
            "other_cpu_util": median_of(runs, "cpu", "other_util"),
            "errors": [e for r in runs for e in r.get("errors", [])][:10],
        }
    base, slow = summary["baseline"], summary["stalled"]
    base_p99 = [v for v in base["latency_ms_p99_all"] if v is not None]
    stalled_count = params["stalled"]
    per_socket_kb = (params["max_buffer_bytes"] / 1024 + frame_kb) * ALLOCATOR_SLACK
    rss_bound = (
        base["rss_peak_kb_max"] + stalled_count * per_socket_kb if base["rss_peak_kb_max"] else None
    )
    growth = [
        ((r.get("rss_kb") or {}).get("peak") or 0)
        - ((r.get("rss_kb") or {}).get("before_storm") or 0)
        for r in results["runs"]["stalled"]
        if r.get("rss_kb")
    ]
    summary["verdict"] = {
        "all_delivered": all(s["delivered_pct_min"] == 100.0 for s in (base, slow)),
        # A p99 delivery that never arrived (None) is not within anything.
        "p99_within_noise": (
            slow["latency_ms_p99"] is not None
            and all(v is not None for v in slow["latency_ms_p99_all"])
            and slow["latency_ms_p99"] <= max(base_p99) * (1 + params["tolerance"])
            if base_p99
            else None
        ),
        "p99_ratio": round(slow["latency_ms_p99"] / base["latency_ms_p99"], 2)
        if slow["latency_ms_p99"] and base["latency_ms_p99"]
        else None,
        "stalled_all_dropped": bool(slow["dropped"])
        and all(d == stalled_count for d in slow["dropped"]),
        "rss_bound_kb": round(rss_bound) if rss_bound else None,
        "rss_growth_kb_per_stalled_socket": round(statistics.median(growth) / stalled_count, 1)
        if growth and stalled_count
        else None,
        "rss_bounded": slow["rss_peak_kb_max"] <= rss_bound
        if rss_bound and slow["rss_peak_kb_max"]
        else None,
        "loadgen_is_ceiling": max(base["loadgen_cpu_util"] or 0, slow["loadgen_cpu_util"] or 0)
        >= 0.9,
    }
    return summary


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    summary = results["summary"]
    base, slow = summary["baseline"], summary["stalled"]
    params = results["params"]

    def both(key: str, unit: str = "") -> tuple[str, str]:
        return fmt(base[key], unit), fmt(slow[key], unit)

    def late(value: float | None) -> str:
        return "never (lost)" if value is None else fmt(value)

    def mb(value: float | None) -> str:
        return "n/a" if value is None else f"{value / 1024:,.0f} MB"

    return [
        ("reading clients / stalled", f"{params['clients']} / 0", _readers(params)),
        (
            "deliveries received / expected (worst run)",
            *(
                f"{s['delivered_worst'][0]:,} / {s['delivered_worst'][1]:,} "
                f"({fmt(s['delivered_pct_min'], '%')})"
                for s in (base, slow)
            ),
        ),
        *(
            (
                f"delivery latency {q}, ms",
                late(base[f"latency_ms_{q}"]),
                late(slow[f"latency_ms_{q}"]),
            )
            for q in ("p50", "p99", "max")
        ),
        (
            "delivery latency p99 of each run, ms",
            *(", ".join(late(v) for v in s["latency_ms_p99_all"]) for s in (base, slow)),
        ),
        (
            "delivery latency p99 of broadcasts sent before / after the drops, ms",
            "n/a",
            f"{fmt(slow['latency_ms_p99_before_drops'])} / "
            f"{fmt(slow['latency_ms_p99_after_drops'])}",
        ),
        (
            "stalled clients dropped at broadcast number",
            "n/a",
            fmt(slow["first_drop_at_broadcast"]),
        ),
        ("first POST -> last delivery, s", *both("seconds_to_complete")),
        (
            "server RSS before storm",
            mb(base["rss_before_storm_kb"]),
            mb(slow["rss_before_storm_kb"]),
        ),
        ("server RSS peak", mb(base["rss_peak_kb_max"]), mb(slow["rss_peak_kb_max"])),
        (
            "kernel TCP buffers peak, whole machine (not in RSS)",
            mb(base["tcp_buffers_peak_kb"]),
            mb(slow["tcp_buffers_peak_kb"]),
        ),
        (
            "stalled clients dropped (slow-consumer metric)",
            *(str(s["dropped"]) for s in (base, slow)),
        ),
        (
            "CPU busy, % of one core: server / load generator / rest of the machine",
            *(
                f"{s['server_cpu_util'] or 0:.0%} / {s['loadgen_cpu_util'] or 0:.0%} / "
                f"{s['other_cpu_util'] or 0:.0%}"
                for s in (base, slow)
            ),
        ),
    ]


def _readers(params: dict[str, Any]) -> str:
    return f"{params['clients'] - params['stalled']} / {params['stalled']}"


def verdict_lines(results: dict[str, Any]) -> list[str]:
    verdict = results["summary"]["verdict"]
    params = results["params"]

    def say(ok: bool | None) -> str:
        return "n/a" if ok is None else ("yes" if ok else "NO")

    lines = [
        f"- every reading client got every broadcast: {say(verdict['all_delivered'])}",
        f"- others' p99 unchanged within noise (stalled p99 / baseline p99 = "
        f"{fmt(verdict['p99_ratio'], 'x')}, tolerance {params['tolerance']:.0%} over the "
        f"largest baseline p99): {say(verdict['p99_within_noise'])}",
        f"- every stalled client dropped by the buffer limit: "
        f"{say(verdict['stalled_all_dropped'])}",
        f"- server memory bounded (stalled peak <= baseline peak + {params['stalled']} x "
        f"(limit + one frame) x {ALLOCATOR_SLACK} = {fmt((verdict['rss_bound_kb'] or 0) / 1024)} "
        f"MB; it grew {fmt(verdict['rss_growth_kb_per_stalled_socket'])} KB per stalled socket "
        "during the storm): "
        f"{say(verdict['rss_bounded'])}",
    ]
    if verdict["loadgen_is_ceiling"]:
        lines.append(
            "- the load generator was >= 90% busy: latencies include its own queueing and "
            "are an upper bound on the hub's"
        )
    for name in SCENARIOS:
        for error in results["summary"][name]["errors"][:3]:
            lines.append(f"- {name}: {error}")
        for run in results["runs"][name]:
            quiet = run.get("machine_quiet_before") or {}
            if quiet and not quiet.get("quiet"):
                lines.append(
                    f"- {name}: machine busy before a run ({quiet.get('busy_cores')} cores "
                    "in use by other processes): figures are pessimistic"
                )
    return lines


def markdown_table(results: dict[str, Any]) -> str:
    ran, hub_commit = run_facts(results)
    p = results["params"]
    setup = (
        f"{p['clients']} clients, {p['broadcasts']} broadcasts at {fmt(p['rate'])}/s of "
        f"{p['frame_bytes']:,}-byte frames, buffer limit {p['max_buffer_bytes']:,} bytes, "
        f"median of {p['repeats']} run(s) per column, server on CPU {p['server_cpu']}, load "
        f"generator on CPU {p['client_cpu']}."
    )
    header = [
        f"{ran} {setup} {hub_commit} Raw numbers: `{p['output']}`.",
        "",
        f"| metric | baseline (0 stalled) | {p['stalled']} stalled |",
        "|---|---|---|",
    ]
    rows = [f"| {' | '.join(row)} |" for row in table_rows(results)]
    return "\n".join([*header, *rows, "", *verdict_lines(results)]) + "\n"


def print_table(results: dict[str, Any]) -> None:
    rows = [("metric", "baseline", "stalled"), *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)))
    print("\n".join(verdict_lines(results)))


# -- main -------------------------------------------------------------------------------


def frame_bytes(args: argparse.Namespace) -> int:
    """Size of one broadcast frame on the wire (the Engine.IO text, without the WS header)."""
    payload = storm_body(10**6, "y" * args.body_chars, "x" * args.data_chars)
    return len(f'42{NAMESPACE},["{BROADCAST_EVENT}",{json.dumps(payload, separators=(",", ":"))}]')


async def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench.start(args, "slow-clients")
    db_name = f"notifyhub_bench_{secrets.token_hex(4)}"
    results: dict[str, Any] = {
        **results_header("slow_clients"),
        "params": {
            key: getattr(args, key)
            for key in (
                "clients",
                "stalled",
                "broadcasts",
                "rate",
                "body_chars",
                "data_chars",
                "max_buffer_bytes",
                "stalled_receive_buffer",
                "stalled_pong_every",
                "repeats",
                "tolerance",
                "server_cpu",
                "client_cpu",
                "quick",
                "output",
            )
        }
        | {"frame_bytes": frame_bytes(args)},
        "runs": {name: [] for name in SCENARIOS},
        "logs": str(bench.workdir),
    }
    await create_database(args.pg_admin_url, db_name)
    try:
        spec = server_specs(
            bench,
            hub_db=database_url(args.pg_admin_url, db_name, "postgresql+asyncpg"),
            stock_db=database_url(args.pg_admin_url, db_name, "postgresql"),
            redis_url=args.redis_url,
        )["notifyhub"]
        spec.env["NOTIFYHUB_SOCKET_MAX_BUFFER_BYTES"] = str(args.max_buffer_bytes)
        migrate(spec.env, bench.workdir)
        for repeat in range(args.repeats):
            for name, stalled in (("baseline", 0), ("stalled", args.stalled)):
                print(
                    f"[slow_clients] {name} {repeat + 1}/{args.repeats}: {args.clients} "
                    f"clients, {stalled} stalled ...",
                    flush=True,
                )
                async with asyncio.timeout(args.max_seconds_per_run):
                    results["runs"][name].append(await run_once(bench, spec, stalled))
    finally:
        with contextlib.suppress(Exception):
            await drop_database(args.pg_admin_url, db_name)
    results["summary"] = summarize(results)
    return results


# Numeric options: flag, type, default, help.
NUMBERS: tuple[tuple[str, type[int] | type[float], float, str], ...] = (
    ("--clients", int, 1000, "websocket clients in all (users)"),
    ("--stalled", int, 100, "of which never read (second run)"),
    ("--broadcasts", int, 300, "broadcasts in the storm"),
    ("--rate", float, 10.0, "broadcasts per second"),
    ("--body-chars", int, 5000, "broadcast body length (at most 5,000)"),
    ("--data-chars", int, 15000, "filler in the broadcast data"),
    ("--max-buffer-bytes", int, 1024 * 1024, "NOTIFYHUB_SOCKET_MAX_BUFFER_BYTES of the server"),
    ("--stalled-receive-buffer", int, 4096, "SO_RCVBUF of stalled clients"),
    (
        "--stalled-pong-every",
        float,
        5.0,
        "stalled clients write a pong this often without reading (0: never, so the ping "
        "timeout may end them first)",
    ),
    ("--repeats", int, 3, "baseline/stalled pairs; medians are reported"),
    ("--tolerance", float, 0.25, "stalled p99 may exceed the largest baseline p99 by this"),
    ("--server-cpu", int, 0, "core of the server process"),
    ("--client-cpu", int, 1, "core of the load generator"),
    ("--connect-concurrency", int, 100, "parallel connects"),
    ("--connect-timeout", float, 15.0, "seconds per connect"),
    ("--wait-timeout", float, 60.0, "seconds for the last deliveries after the storm"),
    ("--settle", float, 1.0, "idle seconds between connects and storm"),
    ("--settle-after", float, 0.5, "seconds to catch late frames"),
    ("--start-timeout", float, 30.0, "server start timeout"),
    ("--max-seconds-per-run", float, 600.0, "hard bound per run"),
    ("--quiet-threshold", float, 0.15, "cores busy that count as a quiet machine"),
    ("--quiet-timeout", float, 60.0, "longest wait for a quiet machine"),
    ("--sample-every", int, 50, "parse every frame of every k-th client"),
)
QUICK = {"clients": 200, "stalled": 20, "repeats": 1}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Slow-client benchmark: delivery latency of reading clients during a storm of "
            "large broadcasts, without and with clients that stopped reading; server memory "
            "and slow-consumer drops. Loopback only."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    for flag, kind, default, text in NUMBERS:
        add(flag, type=kind, default=kind(default), help=text)
    add("--redis-url", default="redis://127.0.0.1:6379/14", help="Redis URL")
    add(
        "--pg-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE (a fresh one is used)",
    )
    add("--output", help="results JSON (default benchmarks/results/slow_clients.json)")
    add("--from-json", metavar="RESULTS", help="run nothing: print (and --update-doc) a file")
    add("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="markdown file to update")
    add(
        "--update-doc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite the results section in --doc (default: yes, except with --quick)",
    )
    add("--quick", action="store_true", help="smoke: 200 clients, 20 stalled, 1 repeat, no doc")
    return parser


def apply_defaults(args: argparse.Namespace) -> None:
    """Defaults that depend on other options; what fanout's helpers expect."""
    if args.update_doc is None:
        args.update_doc = not args.quick
    if args.output is None:
        name = "slow_clients-quick.json" if args.quick else "slow_clients.json"
        args.output = str(Path("benchmarks") / "results" / name)
    # benchmarks.fanout.server_specs reads these.
    args.profile, args.stock_loop = False, "asyncio"


def check_args(args: argparse.Namespace) -> str | None:
    if not 0 <= args.stalled < args.clients:
        return "--stalled must be at least 0 and below --clients"
    if min(args.broadcasts, args.repeats) < 1 or args.rate <= 0:
        return "--broadcasts, --repeats and --rate must be positive"
    if not 1 <= args.body_chars <= 5000:
        return "--body-chars must be 1..5,000 (the API's limit)"
    return None


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    print_table(results)
    slow_section = functools.partial(update_doc, start=DOC_START, end=DOC_END, intro=DOC_INTRO)
    update_doc_if_asked(args, slow_section, markdown_table(results))


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "--quick" in given:
        parser.set_defaults(**QUICK)  # options given explicitly still win
    args = parser.parse_args(given)
    apply_defaults(args)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        results["summary"] = summarize(results)  # verdicts as this version defines them
        report(args, results)
        return 0
    problem = check_args(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    results, output = run_load_generator(args, run)
    print(f"\nresults: {output}\nserver logs: {results['logs']}")
    report(args, results)
    verdict = results["summary"]["verdict"]
    return 0 if verdict["all_delivered"] and verdict["stalled_all_dropped"] else 1


if __name__ == "__main__":
    sys.exit(main())
