"""Where a benchmark's results go: its JSON file and its section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_results(output: Path, results: dict[str, Any]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


def replace_section(
    path: Path, section: str, *, start: str, end: str, missing: str, new_file: str
) -> None:
    """Rewrite only what lies between the ``start`` and ``end`` markers of ``path``. Where
    they are missing, ``missing`` (which holds them) is appended first; a file that does
    not exist yet starts as ``new_file``."""
    text = path.read_text() if path.exists() else new_file
    if start not in text or end not in text:
        text = f"{text.rstrip()}\n\n{missing}"
    head, rest = text.split(start, 1)
    _old, tail = rest.split(end, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{start}\n{section}{end}{tail}")


def update_doc_if_asked(
    args: argparse.Namespace, update_doc: Callable[[Path, str], None], section: str
) -> None:
    """With --update-doc, ``update_doc(--doc, section)`` and say which file it rewrote."""
    if args.update_doc:
        update_doc(Path(args.doc), section)
        print(f"doc: {args.doc}")
