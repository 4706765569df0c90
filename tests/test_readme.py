"""The README stays true: every setting is documented, and the commands it gives exist."""

from __future__ import annotations

import re
from pathlib import Path

from hub.cli import build_parser
from hub.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"`(NOTIFYHUB_[A-Z_]+)`", README))
    settings = {f"NOTIFYHUB_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from README"
    test_only = {
        "NOTIFYHUB_TEST_DATABASE_URL",
        "NOTIFYHUB_TEST_REDIS_URL",
        "NOTIFYHUB_TEST_RABBITMQ_URL",
    }
    assert documented - settings - test_only == set(), "README names settings that do not exist"


def test_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/test" in README
    assert "exec bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_cli_commands_parse() -> None:
    parser = build_parser()
    for line in re.findall(r"notifyhub ([a-z][^`\n|]*)", README):
        words = line.split("#", 1)[0].split()
        if (
            words[0] in {"serve", "migrate", "token", "worker"}
            and "[" not in line
            and "..." not in line
        ):
            parser.parse_args(words)
