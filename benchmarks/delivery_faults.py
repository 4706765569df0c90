"""Live delivery under faults at a larger scale than the CI tests: two ``notifyhub serve``
processes on PostgreSQL and a Redis of the script's own, ``--clients`` Socket.IO clients
spread over both, and a producer creating one notification per user every
``--interval`` seconds for ``--seconds``. During the run:

1. Redis is killed (SIGKILL) for ``--redis-down`` seconds, then started again;
2. node A is killed with SIGKILL; its clients resume on node B with their ``last_seq``
   (what a Socket.IO client behind a load balancer does);
3. at the end node B gets SIGTERM and its exit time is measured.

Counted per client: notifications received against the user's stored ones (lost), seqs
received twice (doubled) and out of order; per notification, the delay from the producer's
201 to each client (p50, p99, max), overall and for those created while Redis was down.

    .venv/bin/python benchmarks/delivery_faults.py --help
    .venv/bin/python benchmarks/delivery_faults.py                 # 200 clients, 40 s
    .venv/bin/python benchmarks/delivery_faults.py --clients 50 --seconds 15
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
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.machine import code_version, cpu_model  # noqa: E402
from benchmarks.private_hub import private_services  # noqa: E402
from hub.settings import Settings  # noqa: E402
from tests.harness.api import ApiClient  # noqa: E402
from tests.harness.failover import FailoverClient  # noqa: E402
from tests.harness.hub import settings_environment  # noqa: E402
from tests.harness.ports import free_port, wait_for_port_async  # noqa: E402
from tests.harness.services import PrivateRedis  # noqa: E402
from tests.harness.tokens import hs256_token  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "delivery_faults.json"
TENANT = "bench-faults"


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000, 1)


def start_serve(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_environment(settings), "NOTIFYHUB_LOG_LEVEL": "INFO"}
    with log.open("ab") as output:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=output,
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with private_services(args.database_url) as (settings, redis):
        return await scenario(args, settings, redis, Path(args.log_dir))


async def scenario(
    args: argparse.Namespace, settings: Settings, redis: PrivateRedis, logs: Path
) -> dict[str, Any]:
    ports = [free_port(), free_port()]
    nodes = [start_serve(settings, port, logs / f"serve-{i}.log") for i, port in enumerate(ports)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    for port in ports:
        await wait_for_port_async(port, timeout=30)
    users = [f"u{i}" for i in range(args.clients)]
    clients = [FailoverClient(hs256_token(tenant=TENANT, user=user), urls[1]) for user in users]
    for start in range(0, len(clients), 50):
        await asyncio.gather(
            *(c.connect(urls[i % 2]) for i, c in enumerate(clients[start : start + 50], start))
        )
    created: dict[int, float] = {}  # seq (the same for every user: one per round) -> 201 at
    redis_down: set[int] = set()
    events: dict[str, float] = {}
    service = [ApiClient.for_service(url, TENANT) for url in urls]
    rounds = int(args.seconds / args.interval)
    started = time.monotonic()
    node_a_alive = True

    async def faults() -> None:
        nonlocal node_a_alive
        await asyncio.sleep(args.seconds * 0.2)
        events["redis_killed"] = time.monotonic() - started
        redis.kill()
        await asyncio.sleep(args.redis_down)
        await redis.start()
        events["redis_back"] = time.monotonic() - started
        await asyncio.sleep(args.seconds * 0.25)
        nodes[0].send_signal(signal.SIGKILL)
        node_a_alive = False
        events["node_a_killed"] = time.monotonic() - started

    faulting = asyncio.create_task(faults())
    for number in range(rounds):
        target = service[0] if node_a_alive else service[1]
        try:
            await target.notify(users, title=f"n{number}")
        except Exception:  # node A died under this very request: send it to node B
            await service[1].notify(users, title=f"n{number}")
        seq = number + 1
        created[seq] = time.monotonic()
        if "redis_killed" in events and "redis_back" not in events:
            redis_down.add(seq)
        await asyncio.sleep(args.interval)
    await faulting
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline and any(len(set(c.seqs)) < rounds for c in clients):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    results = tally(clients, created, redis_down)
    for client in clients:
        await client.close()
    stopping = time.monotonic()
    nodes[1].send_signal(signal.SIGTERM)
    while nodes[1].poll() is None and time.monotonic() - stopping < 30:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "code": code_version(),
        "clients": args.clients,
        **results,
        "faults_at_seconds": {key: round(value, 2) for key, value in events.items()},
        "node_b_sigterm_exit_seconds": round(time.monotonic() - stopping, 2),
    }


def tally(
    clients: list[FailoverClient], created: dict[int, float], redis_down: set[int]
) -> dict[str, Any]:
    """Lost, doubled and late deliveries against what the producer stored."""
    rounds = len(created)
    lost = doubled = unordered = 0
    delays: list[float] = []
    outage_delays: list[float] = []
    for client in clients:
        unique = set(client.seqs)
        lost += rounds - len(unique & set(created))
        doubled += len(client.seqs) - len(unique)
        unordered += int(client.seqs != sorted(client.seqs))
        for seq, at in client.arrived.items():
            delay = max(0.0, at - created.get(seq, at))
            (outage_delays if seq in redis_down else delays).append(delay)
    return {
        "notifications_per_client": rounds,
        "deliveries_expected": rounds * len(clients),
        "lost": lost,
        "doubled": doubled,
        "clients_out_of_order": unordered,
        "clients_resumed_on_node_b": sum(1 for c in clients if c.resumes),
        "delay_ms": summary(delays),
        "delay_ms_created_while_redis_down": summary(outage_delays),
    }


def summary(delays: list[float]) -> dict[str, Any]:
    return {
        "count": len(delays),
        "p50": percentile(delays, 0.5),
        "p99": percentile(delays, 0.99),
        "max": percentile(delays, 1.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=200, help="users, one socket each")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to produce")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between rounds")
    parser.add_argument("--redis-down", type=float, default=5.0, help="seconds Redis is away")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait at the end")
    parser.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="a server where the user may create databases (a fresh one is used)",
    )
    parser.add_argument(
        "--log-dir", default=str(Path(tempfile.gettempdir()) / "notifyhub-delivery-faults")
    )
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if results["lost"] == results["doubled"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
