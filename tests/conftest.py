"""Fixtures for the whole suite live in ``tests/harness``; this file only loads them."""

pytest_plugins = [
    "tests.harness.services",
    "tests.harness.tokens",
    "tests.harness.smtp",
    "tests.harness.auth_service",
    "tests.harness.hub",
    "tests.harness.legacy_ws",
    "tests.harness.worker",
    "tests.harness.proxy",
    "tests.harness.postgres",
    "tests.harness.kafka",
    "tests.harness.push",
    "tests.harness.statements",
]
