"""``notifyhub consume`` with extra aiokafka consumer options, for ``benchmarks/ingest.py``.

Runs ``hub.consumer.main`` unchanged (same KafkaIntake, EventApplier, Redis bus and
task broker), except that

- the ``KafkaIntake`` it builds gets ``consumer_options`` from the environment variable
  ``INGEST_CONSUMER_OPTIONS`` (a JSON object, e.g. ``{"fetch_max_wait_ms": 10}``):
  ``notifyhub consume`` has no setting for these, and the benchmark uses this to show what
  the broker's fetch wait does to latency;
- with ``INGEST_GC_FREEZE=1`` the objects alive after the imports are moved to the
  permanent generation (``gc.freeze()``), so full collections no longer walk them;
- with ``INGEST_UVLOOP=1`` the event loop is uvloop's (``notifyhub serve`` uses uvloop,
  ``notifyhub consume`` the default asyncio loop);
- each batch is timed (whole batch: decode + apply + offset commit; ``EventApplier`` and
  the offset commit alone; process CPU time during the batch and during ``EventApplier``),
  and so is each garbage collection (``gc.callbacks``)
  and, with ``INGEST_STATS_FILE`` set, the timings are written there as JSON at exit.
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

import functools  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

from aiokafka.structs import ConsumerRecord  # noqa: E402

from hub import consumer as consume  # noqa: E402
from hub.intake.apply import BatchOutcome, EventApplier  # noqa: E402
from hub.intake.envelope import EventEnvelope  # noqa: E402
from hub.intake.kafka import KafkaIntake  # noqa: E402
from hub.logs import setup_logging  # noqa: E402
from hub.settings import load_settings  # noqa: E402

# (wall clock at start, records, whole batch ms, EventApplier ms, offset commit ms,
#  process CPU ms during the batch, process CPU ms during EventApplier)
BATCHES: list[tuple[float, int, float, float, float, float, float]] = []
_last_apply_ms = [0.0]
_last_commit_ms = [0.0]
_last_apply_cpu_ms = [0.0]


# Garbage collections: (wall clock at start, generation, ms)
COLLECTIONS: list[tuple[float, int, float]] = []
_gc_started = [0.0, 0.0]


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0], _gc_started[1] = time.time(), time.perf_counter()
    else:
        elapsed = 1000 * (time.perf_counter() - _gc_started[1])
        COLLECTIONS.append((_gc_started[0], int(info["generation"]), elapsed))


class TimedIntake(KafkaIntake):
    async def _process(self, records: list[ConsumerRecord]) -> None:
        started, clock, cpu = time.time(), time.perf_counter(), time.process_time()
        _last_apply_ms[0] = _last_commit_ms[0] = _last_apply_cpu_ms[0] = 0.0
        await super()._process(records)
        whole = 1000 * (time.perf_counter() - clock)
        whole_cpu = 1000 * (time.process_time() - cpu)
        BATCHES.append(
            (
                started,
                len(records),
                whole,
                _last_apply_ms[0],
                _last_commit_ms[0],
                whole_cpu,
                _last_apply_cpu_ms[0],
            )
        )

    async def commit_pending(self, consumer: Any = None) -> None:
        clock = time.perf_counter()
        try:
            await super().commit_pending(consumer)
        finally:
            _last_commit_ms[0] += 1000 * (time.perf_counter() - clock)


_apply_events = EventApplier.__call__


async def timed_apply(applier: EventApplier, events: Sequence[EventEnvelope]) -> BatchOutcome:
    clock, cpu = time.perf_counter(), time.process_time()
    try:
        return await _apply_events(applier, events)
    finally:
        _last_apply_ms[0] += 1000 * (time.perf_counter() - clock)
        _last_apply_cpu_ms[0] += 1000 * (time.process_time() - cpu)


def main() -> int:
    options = json.loads(os.environ.get("INGEST_CONSUMER_OPTIONS", "{}"))
    if not isinstance(options, dict):
        raise SystemExit("INGEST_CONSUMER_OPTIONS must be a JSON object")
    consume.KafkaIntake = functools.partial(TimedIntake, consumer_options=options)  # type: ignore[attr-defined,assignment]
    # Time every batch the intake applies.
    EventApplier.__call__ = timed_apply  # type: ignore[method-assign]
    if os.environ.get("INGEST_UVLOOP") == "1":
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    gc.callbacks.append(_gc_callback)
    if os.environ.get("INGEST_GC_FREEZE") == "1":
        import tasks.broker  # noqa: F401 - imported by run_consumer; frozen with the rest

        gc.collect()
        gc.freeze()
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    try:
        return consume.main(settings)
    finally:
        stats_file = os.environ.get("INGEST_STATS_FILE")
        if stats_file:
            Path(stats_file).write_text(json.dumps({"batches": BATCHES, "gc": COLLECTIONS}))


if __name__ == "__main__":
    sys.exit(main())
