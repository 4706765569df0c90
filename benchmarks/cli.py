"""Command-line options that several benchmarks share, and what --quick changes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from benchmarks.machine import REPO

QUIET_THRESHOLD_HELP = "before each measurement wait until the cores are this idle (in cores busy)"
QUIET_TIMEOUT_HELP = "longest wait for a quiet machine"


def add_quiet_options(
    parser: argparse.ArgumentParser,
    threshold: float,
    timeout: float,
    threshold_help: str = QUIET_THRESHOLD_HELP,
    timeout_help: str = QUIET_TIMEOUT_HELP,
) -> None:
    """--quiet-threshold and --quiet-timeout: how idle the machine must be before measuring."""
    parser.add_argument("--quiet-threshold", type=float, default=threshold, help=threshold_help)
    parser.add_argument("--quiet-timeout", type=float, default=timeout, help=timeout_help)


def add_rig_options(parser: argparse.ArgumentParser, *, connect_timeout: float) -> None:
    """Where the servers' PostgreSQL and Redis are, which core runs the server and which the
    load generator, and how clients connect: what fanout.py's servers and clients read."""
    parser.add_argument(
        "--redis",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="servers use Redis between processes (Socket.IO manager, Node's redis adapter)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="Redis URL")
    parser.add_argument(
        "--pg-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL DSN allowed to CREATE/DROP DATABASE (a fresh one is used)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core of the server process")
    parser.add_argument("--client-cpu", type=int, default=1, help="core of the load generator")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="parallel connects")
    parser.add_argument(
        "--connect-timeout", type=float, default=connect_timeout, help="seconds per connect"
    )


def add_doc_options(parser: argparse.ArgumentParser, doc_help: str, update_help: str) -> None:
    """--doc (the markdown file, docs/benchmarks.md by default) and --update-doc."""
    parser.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help=doc_help)
    parser.add_argument(
        "--update-doc", action=argparse.BooleanOptionalAction, default=None, help=update_help
    )


def apply_quick(
    args: argparse.Namespace,
    build_parser: Callable[[], argparse.ArgumentParser],
    changes: dict[str, Any],
) -> None:
    """With --quick: ``changes`` for each option not given explicitly (left at its default)."""
    if not args.quick:
        return
    defaults = build_parser().parse_args([])
    for name, value in changes.items():
        if getattr(args, name) == getattr(defaults, name):
            setattr(args, name, value)
