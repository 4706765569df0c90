"""Email sending benchmark: the worker's pooled SMTP connections against one connection per mail.

One process (= one email worker), pinned to one core, sends N prebuilt emails with
``--concurrency`` concurrent senders through ``tasks.smtp.SmtpPool`` twice in the same run:

- pooled: ``SmtpPool(reuse=True, max_connections_per_server=4)``: connections stay open
  (connect, EHLO, STARTTLS and AUTH once per connection);
- new connection per mail: ``SmtpPool(reuse=False)``: connect, EHLO, [STARTTLS, EHLO,
  AUTH,] MAIL, RCPT, DATA, QUIT for every email (same bound of 4 connections).

The receiving end is an aiosmtpd sink in a separate process pinned to the other core (when
there are two) that only counts messages and sessions. Each scenario (plain SMTP, SMTP with
AUTH PLAIN, STARTTLS with AUTH) runs both modes ``--repeats`` times, alternating which goes
first; the median emails/s is reported with the ratio. Loopback only: no network latency,
so the ratio is the CPU and round-trip cost of connection setup alone (a real provider adds
a network round trip to every command, which pooling saves four to six of per email).

    .venv/bin/python benchmarks/email.py --quick   # smoke run: 300 emails, 1 repeat
    .venv/bin/python benchmarks/email.py           # full run: writes results + docs
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is called email.py: run as a script, its folder would come first on sys.path and
# shadow the standard library's ``email`` package, which aiosmtplib (and this file) import.
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
import logging  # noqa: E402
import os  # noqa: E402
import ssl  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from email.message import EmailMessage  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.cli import add_doc_options, add_quiet_options, apply_quick  # noqa: E402
from benchmarks.machine import (  # noqa: E402
    CpuWindow,
    free_port,
    git_state,
    machine_info,
    wait_for_quiet,
)
from benchmarks.processes import pin  # noqa: E402
from benchmarks.report import replace_section, update_doc_if_asked, write_results  # noqa: E402
from tests.harness.certificates import self_signed_certificate  # noqa: E402

HOST = "127.0.0.1"
DOC_START = "<!-- email-results:start -->"
DOC_END = "<!-- email-results:end -->"
TARGET_RATIO = 3.0
SINK_HOSTNAME = "sink.bench.local"
USERNAME = "bench-tenant"
PASSWORD = "bench-password"  # noqa: S105 - a throwaway credential of the local sink
SCENARIOS: dict[str, dict[str, bool]] = {
    "plain": {"auth": False, "starttls": False},
    "auth": {"auth": True, "starttls": False},
    "starttls": {"auth": True, "starttls": True},
}
SCENARIO_LABELS = {
    "plain": "plain SMTP, no AUTH",
    "auth": "plain SMTP + AUTH PLAIN",
    "starttls": "STARTTLS + AUTH PLAIN",
}
MODES = ("pooled", "per_mail")
MODE_LABELS = {
    "pooled": "pooled (reuse=True, 4 connections)",
    "per_mail": "new connection per mail (reuse=False)",
}

DOC_SECTION = f"""## Email sending: `benchmarks/email.py`

What it measures: emails/s that one email worker process gets out of
`tasks.smtp.SmtpPool` with pooled connections (`SmtpPool(reuse=True,
max_connections_per_server=4)`) against a new connection per email
(`SmtpPool(reuse=False)`, the same bound of 4 connections), side by side in the same run.

Method:

- The sender is one process pinned to one core (`os.sched_setaffinity`), an asyncio
  loop like `notifyhub worker`, with `--concurrency` senders awaiting `pool.send()` for
  N prebuilt `multipart/alternative` emails (text + HTML, ~1.5 KB); building the
  messages is not timed.
- The receiver is an aiosmtpd server in a separate process pinned to the other core
  (uvloop); it counts messages and sessions and checks the count after every run.
- Scenarios: plain SMTP; plain SMTP with AUTH PLAIN; STARTTLS (self-signed certificate
  made for the run, so the sender runs with `validate_certs=False`) with AUTH PLAIN,
  as a tenant's port 587 server would be used.
- Each mode is measured `--repeats` times per scenario, alternating which mode goes
  first; the median is reported. CPU rows are process CPU time over wall time.
- Loopback only: there is no network latency, so the ratio is the CPU cost of
  connection setup alone. Against a real provider every command also waits for a
  network round trip: a pooled email takes 4 (MAIL, RCPT, DATA, end of data), a fresh
  connection 4 to 8 more (TCP handshake and greeting, EHLO, [STARTTLS, TLS handshake,
  EHLO,] [AUTH,] QUIT). `--reply-delay-ms D` makes the sink wait D before every reply
  (2D before the greeting and the STARTTLS reply) to show that regime.

Run:

```sh
.venv/bin/python benchmarks/email.py --quick   # smoke run: 300 emails, 1 repeat
.venv/bin/python benchmarks/email.py           # full run: 2,000 emails; updates this page
.venv/bin/python benchmarks/email.py --reply-delay-ms 5 --emails 600 --repeats 1 \\
    --no-update-doc --output benchmarks/results/email-reply-delay-5ms.json
.venv/bin/python benchmarks/email.py --help
```

### Latest results

{DOC_START}
{DOC_END}
"""


# -- machine info -------------------------------------------------------------------------


def code_commit() -> dict[str, Any]:
    state = git_state("tasks/smtp.py")
    if state is None:
        return {}
    commit, changed = state
    return {"commit": commit, "smtp_module_uncommitted": bool(changed)}


# -- the sink (its own process) ------------------------------------------------------------


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the sink's STARTTLS."""
    from cryptography import x509

    return self_signed_certificate(
        folder, common_name=SINK_HOSTNAME, alternative_name=x509.DNSName(SINK_HOSTNAME)
    )


class SinkHandler:
    """Accepts everything, keeps counts only (parsing would make the sink the bottleneck)."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.sessions = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        self.bytes += len(envelope.content)
        return "250 2.0.0 Ok: queued"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    if not ok:
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535
    return AuthResult(success=True, auth_data=data)


async def serve_sink(args: argparse.Namespace) -> None:
    """Run the sink until stdin closes; answer ``stats`` lines with a JSON line."""
    from aiosmtpd.smtp import SMTP

    # aiosmtpd warns about its own deprecated Session.login_data on every AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    handler = SinkHandler()
    tls_context: ssl.SSLContext | None = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)

    delay = args.reply_delay_ms / 1000

    class DelayedSMTP(SMTP):
        """A crude network: every round trip costs ``delay``, added to the reply ending it.

        Each complete reply waits ``delay``; the 220 replies wait twice as long, since the
        greeting also stands for the TCP handshake and "220 Ready to start TLS" for the
        TLS 1.3 handshake that follows it.
        """

        async def push(self, status: str | bytes) -> None:
            text = status if isinstance(status, str) else status.decode("ascii", "replace")
            if text[3:4] != "-":  # not a continuation line of a multi-line reply
                await asyncio.sleep(2 * delay if text.startswith("220") else delay)
            await super().push(status)

    server_class = DelayedSMTP if delay > 0 else SMTP

    def factory() -> SMTP:
        handler.sessions += 1
        return server_class(
            handler,
            hostname=SINK_HOSTNAME,  # else aiosmtpd looks up its FQDN for every session
            ident="bench-sink",
            tls_context=tls_context,
            require_starttls=False,
            authenticator=authenticate,
            auth_require_tls=False,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, HOST, args.port, backlog=1024)
    print("ready", flush=True)
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            break
        if line.strip() == "stats":
            stats = {"messages": handler.messages, "sessions": handler.sessions}
            stats["bytes"] = handler.bytes
            print(json.dumps(stats), flush=True)
    server.close()


class Sink:
    """The sink process: start, ask for counts, stop (by its own PID)."""

    def __init__(self, args: argparse.Namespace, *, tls: tuple[Path, Path] | None) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-sink",
            "--port",
            str(self.port),
            "--sink-cpu",
            str(args.sink_cpu),
            "--sink-loop",
            args.sink_loop,
            "--reply-delay-ms",
            str(args.reply_delay_ms),
        ]
        if tls is not None:
            command += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.process = subprocess.Popen(  # noqa: S603 - this script, fixed arguments
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the SMTP sink did not start (said {line!r})")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        answer: dict[str, int] = json.loads(self.process.stdout.readline())
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


# -- the sender ----------------------------------------------------------------------------


@dataclass
class Measurement:
    emails: int
    seconds: float
    client_cpu: float
    sink_cpu: float
    connections_opened: int
    sink_sessions: int
    errors: int
    machine_before: dict[str, Any]
    # CPU that neither the sender nor the sink used while measuring: other jobs, the kernel.
    other_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.emails / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "emails": self.emails,
            "seconds": round(self.seconds, 4),
            "emails_per_s": round(self.rate, 1),
            "client_cpu_busy": round(self.client_cpu / self.seconds, 3),
            "sink_cpu_busy": round(self.sink_cpu / self.seconds, 3),
            "other_cpu_busy": round(self.other_cpu / self.seconds, 3),
            "client_cpu_us_per_email": round(1e6 * self.client_cpu / self.emails, 1),
            "sink_cpu_us_per_email": round(1e6 * self.sink_cpu / self.emails, 1),
            "connections_opened": self.connections_opened,
            "sink_sessions": self.sink_sessions,
            "errors": self.errors,
            "machine_before": self.machine_before,
        }


def build_messages(count: int, config: Any) -> list[EmailMessage]:
    from tasks.smtp import build_message
    from tasks.templates import RenderedEmail

    text = (
        "Hello {name},\n\nYour invoice INV-{n:05d} for 1,234.56 EUR is ready. It is due on "
        "the 15th; you can pay it online or by transfer.\n\nThanks,\nAcme Café billing\n"
    )
    html = (
        "<html><body><p>Hello <b>{name}</b>,</p><p>Your invoice <a href='https://crm.example/"
        "invoices/{n}'>INV-{n:05d}</a> for <b>1,234.56 EUR</b> is ready. It is due on the "
        "15th; you can pay it online or by transfer.</p><p>Thanks,<br>Acme Café billing</p>"
        "</body></html>"
    )
    messages = []
    for n in range(count):
        name = f"Zoë Customer {n}"
        rendered = RenderedEmail(
            subject=f"Your invoice INV-{n:05d} — Acme Café",
            html=html.format(name=name, n=n),
            text=text.format(name=name, n=n),
        )
        messages.append(
            build_message(config, to_email=f"customer{n}@client.example", rendered=rendered)
        )
    return messages


async def send_all(
    pool: Any, config: Any, messages: Sequence[EmailMessage], concurrency: int
) -> int:
    """Send every message with ``concurrency`` senders; returns the number of failures."""
    from tasks.smtp import SmtpError

    queue = iter(messages)
    errors = 0
    first_error: list[str] = []

    async def sender() -> None:
        nonlocal errors
        for message in queue:
            try:
                await pool.send(config, message)
            except SmtpError as exc:
                errors += 1
                if not first_error:
                    first_error.append(str(exc))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    if first_error:
        print(f"  {errors} sends failed, first: {first_error[0]}", file=sys.stderr)
    return errors


async def measure(
    make_pool: Callable[[], Any],
    config: Any,
    messages: Sequence[EmailMessage],
    *,
    concurrency: int,
    sink: Sink,
    quiet: tuple[float, float],
) -> Measurement:
    machine_before = await wait_for_quiet(*quiet)
    pool = make_pool()
    try:
        # Warm-up outside the clock: FQDN lookup, first connections, code paths.
        await send_all(pool, config, messages[: min(len(messages), 20)], concurrency)
        opened_before = pool.connections_opened
        before = sink.stats()
        cpu = CpuWindow.begin(sink.pid)
        started = time.perf_counter()
        errors = await send_all(pool, config, messages, concurrency)
        seconds = time.perf_counter() - started
        (sink_cpu,), client_cpu, all_busy, _cores = cpu.end()
    finally:
        await pool.close()
    after = sink.stats()
    received = after["messages"] - before["messages"]
    if received != len(messages) - errors:
        raise RuntimeError(f"sink received {received} of {len(messages) - errors} emails")
    return Measurement(
        emails=len(messages),
        seconds=seconds,
        client_cpu=client_cpu,
        sink_cpu=sink_cpu,
        connections_opened=pool.connections_opened - opened_before,
        sink_sessions=after["sessions"] - before["sessions"],
        errors=errors,
        machine_before=machine_before,
        other_cpu=max(0.0, all_busy - client_cpu - sink_cpu),
    )


async def run_scenario(
    name: str, args: argparse.Namespace, tls: tuple[Path, Path] | None
) -> dict[str, Any]:
    from tasks.auth_service import SmtpConfig
    from tasks.smtp import SmtpPool

    options = SCENARIOS[name]
    sink = Sink(args, tls=tls if options["starttls"] else None)
    cpus = {"sender_cpus": sorted(os.sched_getaffinity(0))}
    cpus["sink_cpus"] = sorted(os.sched_getaffinity(sink.pid))
    try:
        config = SmtpConfig(
            host=HOST,
            port=sink.port,
            username=USERNAME if options["auth"] else None,
            password=PASSWORD if options["auth"] else None,
            use_tls=False,
            start_tls=options["starttls"],
            from_email="billing@acme.example",
            from_name="Acme Café billing",
        )
        messages = build_messages(args.emails, config)
        makers: dict[str, Callable[[], Any]] = {
            "pooled": lambda: SmtpPool(
                reuse=True,
                max_connections_per_server=args.max_connections,
                validate_certs=False,
            ),
            "per_mail": lambda: SmtpPool(
                reuse=False,
                max_connections_per_server=args.max_connections,
                validate_certs=False,
            ),
        }
        runs: dict[str, list[Measurement]] = {mode: [] for mode in MODES}
        for repeat in range(args.repeats):
            order = MODES if repeat % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                for _attempt in range(args.attempts):
                    result = await measure(
                        makers[mode],
                        config,
                        messages,
                        concurrency=args.concurrency,
                        sink=sink,
                        quiet=(args.quiet_threshold, args.quiet_timeout),
                    )
                    if result.other_cpu / result.seconds <= args.max_other_cpu:
                        break
                    print(
                        f"  {name:9} {mode:9} run {repeat + 1}: other jobs used "
                        f"{result.other_cpu / result.seconds:.0%} of a core meanwhile; again",
                        flush=True,
                    )
                if not result.machine_before["quiet"]:
                    print(f"  (machine busy before this run: {result.machine_before})")
                runs[mode].append(result)
                print(
                    f"  {name:9} {mode:9} run {repeat + 1}: {result.rate:8.0f} emails/s "
                    f"(sender CPU {result.client_cpu / result.seconds:4.0%}, sink CPU "
                    f"{result.sink_cpu / result.seconds:4.0%}, other "
                    f"{result.other_cpu / result.seconds:4.0%}, "
                    f"{result.connections_opened} connections)",
                    flush=True,
                )
    finally:
        sink.stop()
    summary: dict[str, Any] = {"label": SCENARIO_LABELS[name], **options, **cpus}
    for mode in MODES:
        median = statistics.median(m.rate for m in runs[mode])
        chosen = min(runs[mode], key=lambda m: abs(m.rate - median))
        summary[mode] = {
            "median_emails_per_s": round(median, 1),
            "range": [
                round(min(m.rate for m in runs[mode]), 1),
                round(max(m.rate for m in runs[mode]), 1),
            ],
            "median_run": chosen.as_dict(),
            "runs": [m.as_dict() for m in runs[mode]],
        }
    summary["ratio"] = round(
        summary["pooled"]["median_emails_per_s"] / summary["per_mail"]["median_emails_per_s"], 2
    )
    return summary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "email",
        "started_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(("aiosmtplib", "aiosmtpd", "uvloop")),
        "code": code_commit(),
        "settings": {
            "emails": args.emails,
            "concurrency": args.concurrency,
            "max_connections_per_server": args.max_connections,
            "repeats": args.repeats,
            "client_cpu": args.client_cpu,
            "sink_cpu": args.sink_cpu,
            "client_pinned": args.client_pinned,
            "client_loop": args.loop,
            "sink_loop": args.sink_loop,
            "reply_delay_ms": args.reply_delay_ms,
            "max_other_cpu": args.max_other_cpu,
        },
        "target_ratio": TARGET_RATIO,
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="email-bench-") as folder:
        tls = make_certificate(Path(folder)) if "starttls" in args.scenarios else None
        for name in args.scenarios:
            results["scenarios"][name] = await run_scenario(name, args, tls)
    return results


# -- output -------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:,.0f}"


def table_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for scenario in results["scenarios"].values():
        pooled, per_mail = scenario["pooled"], scenario["per_mail"]
        p_run, n_run = pooled["median_run"], per_mail["median_run"]
        met = "met" if scenario["ratio"] >= TARGET_RATIO else "NOT met"
        rows.append(
            (
                scenario["label"],
                f"{fmt(pooled['median_emails_per_s'])} ({fmt(pooled['range'][0])}-"
                f"{fmt(pooled['range'][1])})",
                f"{fmt(per_mail['median_emails_per_s'])} ({fmt(per_mail['range'][0])}-"
                f"{fmt(per_mail['range'][1])})",
                f"{scenario['ratio']:.2f}x ({met})",
                f"{p_run['client_cpu_busy']:.0%} / {p_run['sink_cpu_busy']:.0%}",
                f"{n_run['client_cpu_busy']:.0%} / {n_run['sink_cpu_busy']:.0%}",
                f"{p_run['client_cpu_us_per_email']:.0f} / {n_run['client_cpu_us_per_email']:.0f}",
                f"{p_run['connections_opened']} / {n_run['connections_opened']}",
            )
        )
    return rows


HEADERS = (
    "scenario",
    "pooled, emails/s (range)",
    "new connection per mail, emails/s (range)",
    f"ratio (target >= {TARGET_RATIO:g}x)",
    "pooled CPU: sender / sink",
    "per mail CPU: sender / sink",
    "sender CPU per email, pooled / per mail (us)",
    "connections opened in the timed run, pooled / per mail",
)


def markdown_table(results: dict[str, Any]) -> str:
    settings, machine = results["settings"], results["machine"]
    packages = machine["packages"]
    commit = (results.get("code") or {}).get("commit") or "unknown"
    lines = [
        f"Run {results['started_at']} on {machine['nproc']} cores ({machine['cpu_model']}), "
        f"Python {machine['python']}, aiosmtplib {packages['aiosmtplib']}, aiosmtpd "
        f"{packages['aiosmtpd']}. {settings['emails']:,} emails per measurement, "
        f"{settings['concurrency']} concurrent senders, at most "
        f"{settings['max_connections_per_server']} connections in both modes, median of "
        f"{settings['repeats']}; sender on CPU {settings['client_cpu']} "
        f"({settings['client_loop']} loop), sink on CPU {settings['sink_cpu']} "
        f"({settings['sink_loop']})"
        + (
            f", every sink reply delayed {settings['reply_delay_ms']:g} ms"
            if settings.get("reply_delay_ms")
            else ""
        )
        + f". Code at commit `{commit[:12]}`"
        + (
            " with uncommitted `tasks/smtp.py`"
            if (results.get("code") or {}).get("smtp_module_uncommitted")
            else ""
        )
        + f". Raw numbers: `{results.get('output', 'benchmarks/results/email.json')}`.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    limit = settings.get("max_other_cpu", 0.15)
    noisy = [
        run
        for scenario in results["scenarios"].values()
        for mode in MODES
        for run in scenario[mode]["runs"]
        if not run["machine_before"]["quiet"] or run["other_cpu_busy"] > limit
    ]
    if noisy:
        lines += [
            "",
            f"{len(noisy)} measurement(s) shared the machine with other jobs (up to "
            f"{max(r['other_cpu_busy'] for r in noisy):.2f} cores busy besides sender and "
            "sink): their numbers are noisier.",
        ]
    return "\n".join(lines) + "\n"


def update_doc(path: Path, section: str) -> None:
    """Rewrite only what lies between this benchmark's markers (the section is added once)."""
    replace_section(
        path, section, start=DOC_START, end=DOC_END, missing=DOC_SECTION, new_file="# Benchmarks\n"
    )


def print_table(results: dict[str, Any]) -> None:
    for row in table_rows(results):
        for header, cell in zip(HEADERS, row, strict=True):
            print(f"  {header:46} {cell}")
        print()


# -- main ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Email sending benchmark: tasks.smtp.SmtpPool with pooled connections vs a new "
            "connection per mail, against a local aiosmtpd sink (loopback only)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--emails", type=int, default=2000, help="emails per measurement")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent senders")
    parser.add_argument(
        "--max-connections", type=int, default=4, help="max_connections_per_server (both modes)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per mode; median")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument("--client-cpu", type=int, default=0, help="core of the sending process")
    parser.add_argument("--sink-cpu", type=int, default=1, help="core of the SMTP sink process")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the sender (notifyhub worker runs asyncio's)",
    )
    parser.add_argument(
        "--sink-loop", choices=["asyncio", "uvloop"], default="uvloop", help="sink event loop"
    )
    parser.add_argument(
        "--reply-delay-ms",
        type=float,
        default=0.0,
        help="simulated network round trip: the sink delays every reply by this much "
        "(twice for its greeting and STARTTLS replies, standing for the TCP and TLS handshakes)",
    )
    add_quiet_options(parser, 0.15, 30.0)
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.15,
        help="measure again when other processes used more than this (in cores) meanwhile",
    )
    parser.add_argument(
        "--attempts", type=int, default=4, help="tries per measurement to get a quiet one"
    )
    parser.add_argument("--output", help="results JSON (default benchmarks/results/email.json)")
    add_doc_options(
        parser,
        "markdown file whose email results section is rewritten",
        "rewrite the email results in --doc (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 300 emails, 1 repeat, no doc update"
    )
    # Internal: the sink process.
    parser.add_argument("--serve-sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tls-cert", help=argparse.SUPPRESS)
    parser.add_argument("--tls-key", help=argparse.SUPPRESS)
    return parser


def run_loop(kind: str, coroutine: Any) -> Any:
    if kind == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            return uvloop.run(coroutine)
    return asyncio.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.serve_sink:
        if not pin(args.sink_cpu):
            print(f"warning: could not pin the sink to CPU {args.sink_cpu}", file=sys.stderr)
        run_loop(args.sink_loop, serve_sink(args))
        return 0
    apply_quick(args, build_parser, {"emails": 300, "repeats": 1})
    if args.update_doc is None:
        args.update_doc = not args.quick
    if args.output is None:
        name = "email-quick.json" if args.quick else "email.json"
        args.output = str(REPO / "benchmarks" / "results" / name)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if not args.scenarios or any(s not in SCENARIOS for s in args.scenarios):
        print(f"--scenarios takes a comma-separated subset of {list(SCENARIOS)}", file=sys.stderr)
        return 2
    if min(args.emails, args.concurrency, args.repeats, args.max_connections) < 1:
        print("--emails, --concurrency, --repeats, --max-connections must be >= 1", file=sys.stderr)
        return 2
    if args.client_cpu == args.sink_cpu:
        print("warning: sender and sink share a core", file=sys.stderr)
    args.client_pinned = pin(args.client_cpu)

    results = run_loop(args.loop, run(args))

    output = Path(args.output).resolve()
    with contextlib.suppress(ValueError):
        results["output"] = str(output.relative_to(REPO))
    write_results(output, results)
    print()
    print_table(results)
    print(f"results: {output}")
    update_doc_if_asked(args, update_doc, markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
