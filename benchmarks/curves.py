"""How cost grows: fan-out figures at several client counts, and notify latency vs creators.

Two parts, for notifyhub and the Node socket.io 4 peer (stock python-socketio on request),
with the servers, clients, pinning and warm-up of ``benchmarks/fanout.py``:

1. ``scale``: at each of ``--steps`` clients (1,000, 5,000, 10,000), a fresh server per
   step and server, measured exactly as fanout.py measures its one client count:
   broadcast and one-stored-notification-per-user deliveries/s, server CPU per delivery,
   idle memory per socket and connects/s. A flat CPU-per-delivery curve means a delivery
   costs the same whatever the number of sockets.
2. ``latency``: ``--latency-clients`` connected users; ``--creators`` concurrent creators
   (1, 10, 50) together offer ``--rate`` creates/s for ``--latency-seconds``, each create
   one notification for a random user (creator ``j`` sends create ``k`` at
   ``start + k / rate`` for ``k = j, j + C, ...``, or as soon as its previous create was
   answered if that is later). Latency = the load generator's clock when it sends the POST
   -> the same clock when the user's client has read ``notification:new`` (found by a key
   in ``data``); it includes the HTTP request, PostgreSQL, Redis and the load generator's
   own queueing.

Results go to ``benchmarks/results/curves.json``, PNG plots to ``docs/benchmarks/`` (with
the ``bench`` extra: ``pip install -e '.[bench]'`` for matplotlib) and tables to
docs/benchmarks.md.

    .venv/bin/python benchmarks/curves.py --quick     # smoke run, < 1 minute
    .venv/bin/python benchmarks/curves.py             # 1k/5k/10k and 1/10/50 creators
    .venv/bin/python benchmarks/curves.py --parts latency --servers notifyhub
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path, where benchmarks/email.py would shadow
# the standard library's ``email``; the repository root, home of benchmarks.machine, is not.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import aiohttp  # noqa: E402

from benchmarks import fanout  # noqa: E402
from benchmarks.cli import (  # noqa: E402
    add_doc_options,
    add_quiet_options,
    add_rig_options,
    apply_quick,
)
from benchmarks.machine import REPO, CpuWindow, wait_for_quiet  # noqa: E402
from benchmarks.report import update_doc_if_asked  # noqa: E402

DOC_START = "<!-- curves-results:start -->"
DOC_END = "<!-- curves-results:end -->"
DOC_INTRO = "### Cost curves and notify latency: latest results"
PLOTS_DIR = Path("docs") / "benchmarks"
PARTS = ("scale", "latency")
# Where each server's line is drawn, in every plot.
COLOURS = {"notifyhub": "tab:blue", "node": "tab:green", "stock": "tab:orange"}


# -- scale ----------------------------------------------------------------------------


def scale_row(clients: int, measured: dict[str, Any]) -> dict[str, Any]:
    """The figures of one ``fanout.run_server_bench`` result that the curves draw."""

    def dig(*keys: str) -> Any:
        return fanout.dig(measured, *keys)

    return {
        "clients": clients,
        "connected": dig("connect", "clients"),
        "connects_per_s": dig("connect", "per_s"),
        "kb_per_socket_rss": dig("memory", "kb_per_socket_rss"),
        "connected_rss_kb": dig("memory", "connected_rss_kb"),
        **{
            f"{part}_{key}": dig(part, key)
            for part in ("broadcast", "per_user")
            for key in (
                "deliveries_per_s",
                "server_cpu_us_per_delivery",
                "server_cpu_util",
                "loadgen_cpu_util",
                "other_cpu_util",
                "clients_missing_some",
                "clients_with_duplicates",
                "timed_out",
            )
        },
        "errors": measured.get("errors") or [],
        "raw": measured,
    }


async def run_scale(
    bench: fanout.Bench, specs: dict[str, fanout.ServerSpec], names: list[str], steps: list[int]
) -> dict[str, list[dict[str, Any]]]:
    """Every server at every step, a fresh server each time; steps outermost, so that a
    disturbed minute of the shared machine spoils one step of each, not one server's curve."""
    curves: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for clients in steps:
        step_bench = dataclasses.replace(
            bench, args=argparse.Namespace(**{**vars(bench.args), "clients": clients})
        )
        for name in names:
            print(f"[curves] scale: {name}, {clients} clients ...", flush=True)
            try:
                async with asyncio.timeout(bench.args.max_seconds_per_server):
                    measured = await fanout.run_server_bench(step_bench, specs[name])
            except TimeoutError:
                measured = {"errors": [f"over {bench.args.max_seconds_per_server:.0f}s"]}
            row = scale_row(clients, measured)
            curves[name].append(row)
            print(f"[curves]   {json.dumps({k: v for k, v in row.items() if k != 'raw'})}")
    return curves


# -- latency --------------------------------------------------------------------------


@dataclass
class LatencyStats(fanout.Stats):
    """fanout's delivery counters, and when each keyed ``notification:new`` was read."""

    received: dict[int, float] = field(default_factory=dict)
    all_received: asyncio.Event = field(default_factory=asyncio.Event)
    expected_keys: int = 0

    def record(self, index: int, user: str, tenant: str, event: str, frame: str) -> None:
        now = time.perf_counter()  # before any parsing: the read is what is timed
        super().record(index, user, tenant, event, frame)
        if event != fanout.NEW_EVENT:
            return
        with contextlib.suppress(ValueError, KeyError, TypeError, IndexError):
            key = json.loads(frame[2 + len(fanout.NAMESPACE) + 1 :])[1]["data"]["k"]
            self.received[int(key)] = now
            if self.expected_keys and len(self.received) >= self.expected_keys:
                self.all_received.set()


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (``share`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 2)


async def latency_level(
    *,
    bench: fanout.Bench,
    server: fanout.RunningServer,
    http: aiohttp.ClientSession,
    stats: LatencyStats,
    users: list[str],
    creators: int,
    first_key: int,
) -> dict[str, Any]:
    """``creators`` concurrent creators offering ``--rate`` creates/s together."""
    args = bench.args
    total = max(creators, round(args.rate * args.latency_seconds))
    url = server.base_url + server.spec.per_user_path
    sent: dict[int, float] = {}
    http_seconds: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    stats.received.clear()
    stats.all_received.clear()
    stats.expected_keys = total
    pick = random.Random(creators).choice  # which user: not a secret

    async def creator(first: int) -> None:
        for k in range(first, total, creators):
            due = started + k / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(max(0.0, time.perf_counter() - due))
            body = fanout.per_user_body([pick(users)])
            body["data"] = {"k": first_key + k}
            sent[first_key + k] = time.perf_counter()
            try:
                status, seconds = await fanout.trigger(http, url, bench.service_token, body)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            http_seconds.append(seconds)
            if status != 201:
                errors.append(f"HTTP {status}")

    cpu = CpuWindow.begin(server.pid)
    started = time.perf_counter()
    await asyncio.gather(*(creator(j) for j in range(creators)))
    last_sent = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.wait_timeout):
            await stats.all_received.wait()
    (server_cpu,), own_cpu, busy, _cores = cpu.end()
    window = max(1e-9, time.perf_counter() - started)
    latencies = [stats.received[k] - t for k, t in sent.items() if k in stats.received]
    return {
        "creators": creators,
        "offered_per_s": args.rate,
        "sent": len(sent),
        "received": len(latencies),
        "achieved_per_s": round(len(sent) / max(1e-9, last_sent - started), 1),
        "latency_ms": {
            "p50": ms(percentile(latencies, 0.5)),
            "p90": ms(percentile(latencies, 0.9)),
            "p99": ms(percentile(latencies, 0.99)),
            "max": ms(max(latencies, default=None)),
            "mean": ms(statistics.fmean(latencies) if latencies else None),
        },
        "http_ms": {
            "p50": ms(percentile(http_seconds, 0.5)),
            "p99": ms(percentile(http_seconds, 0.99)),
        },
        "schedule_lag_ms": {"p50": ms(percentile(lags, 0.5)), "max": ms(max(lags, default=None))},
        "errors": errors[:10],
        "server_cpu_util": round(server_cpu / window, 3),
        "loadgen_cpu_util": round(own_cpu / window, 3),
        "other_cpu_util": round(max(0.0, busy - server_cpu - own_cpu) / window, 3),
        "server_cpu_us_per_create": round(1e6 * server_cpu / max(1, len(sent)), 1),
    }


async def run_latency(
    bench: fanout.Bench, spec: fanout.ServerSpec, levels: list[int]
) -> dict[str, Any]:
    """One server, ``--latency-clients`` connected, each creator count in turn."""
    args = bench.args
    result: dict[str, Any] = {"clients": args.latency_clients, "levels": [], "errors": []}
    server = await fanout.start_server(
        spec, cpu=args.server_cpu, workdir=bench.workdir, start_within=args.start_timeout
    )
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    stats = LatencyStats(size=args.latency_clients, strict_seq=spec.strict_seq)
    connected: list[fanout.RawClient] = []
    try:
        await fanout.warm_up(bench, server, session, http)
        clients = fanout.make_clients(bench, "u", args.latency_clients, stats)
        connected, failures, _seconds = await fanout.timed_connect(
            clients, session, server.port, args
        )
        if failures:
            result["errors"].append(f"{len(failures)} connects failed: {failures[:3]}")
        users = [c.user for c in connected]
        for number, creators in enumerate(levels):
            quiet = await wait_for_quiet(args.quiet_threshold, args.quiet_timeout)
            print(f"[curves] latency: {spec.name}, {creators} creators ...", flush=True)
            level = await latency_level(
                bench=bench,
                server=server,
                http=http,
                stats=stats,
                users=users,
                creators=creators,
                first_key=number * 10_000_000,
            )
            level["machine_quiet_before"] = quiet
            result["levels"].append(level)
            print(f"[curves]   {json.dumps(level)}", flush=True)
        result["seq_out_of_order_in_sample"] = stats.seq_out_of_order
        result["problems"] = stats.problems
    except Exception as exc:  # reported in the results; the other server still runs
        result["errors"].append(f"{type(exc).__name__}: {exc}")
        print(f"[curves] {spec.name} latency failed: {exc}", file=sys.stderr, flush=True)
    finally:
        await fanout.shut_down(server, connected, session, http)
        result["log_problems"] = fanout.log_problems(server.log_path)
    return result


# -- the run --------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",") if part.strip()})


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    bench = fanout.Bench.start(args, "curves")
    steps, levels = int_list(args.steps), int_list(args.creators)
    parts = [p for p in args.parts.split(",") if p]
    results: dict[str, Any] = {
        **fanout.results_header("curves"),
        "params": {
            "parts": parts,
            "steps": steps,
            "creators": levels,
            "rate_per_s": args.rate,
            "latency_seconds": args.latency_seconds,
            "latency_clients": args.latency_clients,
            "rounds": args.rounds,
            "pipeline": args.pipeline,
            "repeats": args.repeats,
            "redis": args.redis,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "quick": args.quick,
            "output": args.output,
        },
        "servers": {},
        "scale": {},
        "latency": {},
        "logs": str(bench.workdir),
    }
    names = fanout.runnable_servers(args.servers.split(","), results)
    async with fanout.bench_servers(bench, "notifyhub_curves") as specs:
        if "scale" in parts:
            results["scale"] = await run_scale(bench, specs, names, steps)
        if "latency" in parts:
            for name in names:
                results["latency"][name] = await run_latency(bench, specs[name], levels)
    return results


# -- report ---------------------------------------------------------------------------


def plot(results: dict[str, Any], plots_dir: Path) -> list[Path]:
    """PNG plots of both parts into ``plots_dir``; none (and a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        print("[curves] no matplotlib: plots skipped (pip install -e '.[bench]')")
        return []
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    scale = {name: rows for name, rows in results.get("scale", {}).items() if rows}
    if scale:
        panels = (
            ("broadcast_deliveries_per_s", "broadcast, deliveries/s"),
            ("per_user_deliveries_per_s", "one notification per user, deliveries/s"),
            ("broadcast_server_cpu_us_per_delivery", "broadcast: server CPU per delivery, µs"),
            ("per_user_server_cpu_us_per_delivery", "per user: server CPU per delivery, µs"),
            ("kb_per_socket_rss", "idle memory per socket, KB (RSS)"),
            ("connects_per_s", "connects/s (JWT check + rooms)"),
        )
        figure, axes = plt.subplots(2, 3, figsize=(15, 8.5))
        for axis, (key, title) in zip(axes.flat, panels, strict=True):
            for name, rows in scale.items():
                points = [(r["clients"], r[key]) for r in rows if r.get(key) is not None]
                if points:
                    xs, ys = zip(*points, strict=True)
                    label = fanout.SERVER_TITLES[name]
                    axis.plot(xs, ys, marker="o", color=COLOURS[name], label=label)
            axis.set_title(title, fontsize=10)
            axis.set_xlabel("connected clients")
            axis.set_ylim(bottom=0)
            axis.grid(alpha=0.3)
        axes.flat[0].legend()
        figure.suptitle(f"Cost curves, one server core ({results['date']})")
        figure.tight_layout()
        written.append(plots_dir / "curves-scale.png")
        figure.savefig(written[-1], dpi=90)
        plt.close(figure)
    latency = {n: r for n, r in results.get("latency", {}).items() if r.get("levels")}
    if latency:
        figure, axis = plt.subplots(figsize=(8, 5))
        for name, result in latency.items():
            levels = result["levels"]
            creators = [level["creators"] for level in levels]
            for quantile, style in (("p50", "-"), ("p99", "--")):
                latencies = [level["latency_ms"][quantile] for level in levels]
                label = f"{fanout.SERVER_TITLES[name]} {quantile}"
                axis.plot(creators, latencies, style, marker="o", color=COLOURS[name], label=label)
        axis.set_xscale("log")
        axis.set_xticks(sorted({lv["creators"] for r in latency.values() for lv in r["levels"]}))
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.set_xlabel("concurrent creators")
        axis.set_ylabel("create request -> notification:new read, ms")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend()
        params = results["params"]
        axis.set_title(
            f"Notify latency at {params['rate_per_s']:g} creates/s in all, "
            f"{params['latency_clients']} clients",
            fontsize=10,
        )
        figure.tight_layout()
        written.append(plots_dir / "curves-latency.png")
        figure.savefig(written[-1], dpi=90)
        plt.close(figure)
    return written


def share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def markdown(results: dict[str, Any], plots: Sequence[Path], doc: Path) -> str:
    """The doc section: facts, the scale table, the latency table and the plots."""
    params = results["params"]
    ran, hub_commit = fanout.run_facts(results)
    lines = [
        f"{ran} Server on CPU {params['server_cpu']}, load generator on CPU "
        f"{params['client_cpu']}, Redis manager {'on' if params['redis'] else 'off'}. "
        f"{hub_commit} Raw numbers: `{params['output']}`.",
        "",
    ]
    for name, server in results.get("servers", {}).items():
        if server.get("skipped"):
            lines += [f"{fanout.SERVER_TITLES[name]} was skipped: {server['skipped']}.", ""]
    if results.get("scale"):
        lines += [
            f"Scale: {params['rounds']} rounds x {params['pipeline']} pipelined triggers, "
            f"median of {params['repeats']}, a fresh server per step.",
            "",
            "| clients | server | broadcast, deliveries/s | per user, deliveries/s | server CPU "
            "per delivery, broadcast / per user (us) | KB per idle socket | connects/s | "
            "CPU busy broadcast: server / load generator | CPU busy per user: server / load "
            "generator / other |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        rows = sorted(
            ((row["clients"], name, row) for name, rs in results["scale"].items() for row in rs),
            key=lambda item: (item[0], fanout.SERVER_NAMES.index(item[1])),
        )
        for clients, name, row in rows:
            trouble = "; ".join(row["errors"][:2])
            lines.append(
                f"| {clients:,} | {fanout.SERVER_TITLES[name]} | "
                f"{fanout.fmt(row['broadcast_deliveries_per_s'])} | "
                f"{fanout.fmt(row['per_user_deliveries_per_s'])} | "
                f"{fanout.fmt(row['broadcast_server_cpu_us_per_delivery'])} / "
                f"{fanout.fmt(row['per_user_server_cpu_us_per_delivery'])} | "
                f"{fanout.fmt(row['kb_per_socket_rss'])} | {fanout.fmt(row['connects_per_s'])} | "
                f"{share(row['broadcast_server_cpu_util'])} / "
                f"{share(row['broadcast_loadgen_cpu_util'])} | "
                f"{share(row['per_user_server_cpu_util'])} / "
                f"{share(row['per_user_loadgen_cpu_util'])} / "
                f"{share(row['per_user_other_cpu_util'])}"
                f"{' (' + trouble + ')' if trouble else ''} |"
            )
        lines.append("")
    if results.get("latency"):
        lines += [
            f"Notify latency: {params['latency_clients']} connected users, "
            f"{params['rate_per_s']:g} creates/s offered in all for "
            f"{params['latency_seconds']:g} s per level, each create one notification for a "
            "random user; POST sent -> `notification:new` read, same clock.",
            "",
            "| server | creators | achieved creates/s | p50 ms | p90 ms | p99 ms | max ms | "
            "received / sent | HTTP p50 / p99 ms | server CPU per create (us) | CPU busy: "
            "server / load generator / other |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, result in results["latency"].items():
            for level in result.get("levels", []):
                latency, http = level["latency_ms"], level["http_ms"]
                lines.append(
                    f"| {fanout.SERVER_TITLES[name]} | {level['creators']} | "
                    f"{fanout.fmt(level['achieved_per_s'])} | {fanout.fmt(latency['p50'])} | "
                    f"{fanout.fmt(latency['p90'])} | {fanout.fmt(latency['p99'])} | "
                    f"{fanout.fmt(latency['max'])} | {level['received']:,} / {level['sent']:,} | "
                    f"{fanout.fmt(http['p50'])} / {fanout.fmt(http['p99'])} | "
                    f"{fanout.fmt(level['server_cpu_us_per_create'])} | "
                    f"{share(level['server_cpu_util'])} / {share(level['loadgen_cpu_util'])} / "
                    f"{share(level['other_cpu_util'])} |"
                )
        lines.append("")
        for name, result in results["latency"].items():
            if result.get("errors"):
                lines += [f"{fanout.SERVER_TITLES[name]}: errors {result['errors'][:3]}.", ""]
    for path in plots:
        # Relative to the doc, so the images show on any checkout and on GitHub.
        lines += [f"![{path.stem}]({Path(os.path.relpath(path, doc.parent)).as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"


def update_doc(path: Path, section: str) -> None:
    fanout.update_doc(path, section, start=DOC_START, end=DOC_END, intro=DOC_INTRO)


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Plots (unless --no-plots) and, with --update-doc, the doc section."""
    plots_dir = Path(args.plots_dir)
    if not plots_dir.is_absolute():
        plots_dir = REPO / plots_dir
    plots = plot(results, plots_dir) if args.plots else []
    for path in plots:
        print(f"plot: {path}")
    doc = Path(args.doc).resolve()
    section = markdown(results, plots, doc)
    print(section)
    update_doc_if_asked(args, update_doc, section)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Cost curves (deliveries/s, server CPU per delivery, memory per socket, connects/s "
            "at several client counts) and notify latency vs concurrent creators, for notifyhub "
            "and its peers. Loopback only."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts to run")
    parser.add_argument(
        "--servers",
        default="notifyhub,node",
        help=f"servers, a subset of {','.join(fanout.SERVER_NAMES)} (node skipped without Node)",
    )
    parser.add_argument("--steps", default="1000,5000,10000", help="client counts (scale)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per metric")
    parser.add_argument("--pipeline", type=int, default=4, help="triggers back to back per round")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per metric (median)")
    parser.add_argument("--creators", default="1,10,50", help="concurrent creators (latency)")
    parser.add_argument("--rate", type=float, default=100.0, help="creates/s offered in all")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--latency-clients", type=int, default=1000, help="connected users")
    add_rig_options(parser, connect_timeout=30.0)
    parser.add_argument("--output", help="results JSON (default benchmarks/results/curves.json)")
    parser.add_argument("--plots-dir", default=str(PLOTS_DIR), help="where the PNGs go")
    parser.add_argument(
        "--plots", action=argparse.BooleanOptionalAction, default=True, help="write PNG plots"
    )
    parser.add_argument(
        "--from-json", metavar="RESULTS", help="run nothing: plots and tables of a results file"
    )
    add_doc_options(
        parser,
        "markdown file whose curves section is rewritten",
        "rewrite the curves section of --doc (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 100 and 200 clients, 1 and 10 creators for 2 s, notifyhub only "
        "unless --servers, no doc update, plots into a scratch folder",
    )
    parser.add_argument("--wait-timeout", type=float, default=120.0, help="longest wait, s")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before RSS reads")
    parser.add_argument(
        "--max-seconds-per-server", type=float, default=900.0, help="bound per server and step"
    )
    add_quiet_options(parser, 0.15, 60.0)
    return parser


def fanout_args(args: argparse.Namespace) -> argparse.Namespace:
    """fanout.py's options for the shared machinery (servers, clients, measurements), with
    this script's own added: one namespace that both modules read."""
    shared = fanout.build_parser().parse_args(
        [
            *("--clients", str(max([*int_list(args.steps), args.latency_clients]))),
            *("--rounds", str(args.rounds), "--pipeline", str(args.pipeline)),
            *("--repeats", str(args.repeats), "--servers", args.servers),
            *("--redis-url", args.redis_url, "--pg-admin-url", args.pg_admin_url),
            *("--server-cpu", str(args.server_cpu), "--client-cpu", str(args.client_cpu)),
            *("--connect-concurrency", str(args.connect_concurrency)),
            *("--connect-timeout", str(args.connect_timeout)),
            *("--wait-timeout", str(args.wait_timeout), "--settle", str(args.settle)),
            *("--quiet-threshold", str(args.quiet_threshold)),
            *("--quiet-timeout", str(args.quiet_timeout)),
            *("--output", args.output),
            *([] if args.redis else ["--no-redis"]),
        ]
    )
    return argparse.Namespace(**{**vars(shared), **vars(args)})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quick_plots = str(Path("/tmp") / "notifyhub-curves-quick")  # noqa: S108 - smoke output
    apply_quick(
        args,
        build_parser,
        {
            "steps": "100,200",
            "servers": "notifyhub",
            "rounds": 2,
            "repeats": 1,
            "creators": "1,10",
            "rate": 50.0,
            "latency_seconds": 2.0,
            "latency_clients": 100,
            "settle": 0.5,
            "quiet_timeout": 1.0,
            "plots_dir": quick_plots,
        },
    )
    if args.quick and any(a.split("=", 1)[0] == "--servers" for a in argv or sys.argv[1:]):
        # apply_quick takes an explicit value equal to the default for no value at all.
        args.servers = build_parser().parse_args(argv).servers
    if args.update_doc is None:
        args.update_doc = not args.quick
    if args.output is None:
        name = "curves-quick.json" if args.quick else "curves.json"
        args.output = str(Path("benchmarks") / "results" / name)
    if args.from_json:
        report(args, json.loads(Path(args.from_json).read_text()))
        return 0
    names = [n for n in args.servers.split(",") if n]
    parts = [p for p in args.parts.split(",") if p]
    if not names or any(n not in fanout.SERVER_NAMES for n in names):
        print(f"--servers takes a subset of {fanout.SERVER_NAMES}", file=sys.stderr)
        return 2
    if not parts or any(p not in PARTS for p in parts):
        print(f"--parts takes a subset of {PARTS}", file=sys.stderr)
        return 2
    if args.rate <= 0 or min(int_list(args.creators) or [0]) < 1:
        print("--rate and --creators must be positive", file=sys.stderr)
        return 2
    combined = fanout_args(args)
    results, output = fanout.run_load_generator(combined, measure)
    print(f"results: {output}\nserver logs: {results['logs']}")
    report(args, results)
    failed = any(row["errors"] for rows in results["scale"].values() for row in rows) or any(
        r.get("errors") for r in results["latency"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
