"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (its dependencies do)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text

from api.errors import json_response
from db.migrate import SchemaCheck
from hub.keys import DB_ENGINE, KAFKA_INTAKE, RABBITMQ_INTAKE, REDIS, SCHEMA_CHECK
from hub.logs import ThrottledLog

log = logging.getLogger(__name__)
# Probes come every few seconds: during an outage a failing check is news once a minute per
# dependency, not on every probe (db.outage also logs when the database goes and returns).
READINESS_LOG = ThrottledLog(log, interval_seconds=60.0)

CHECK_TIMEOUT_SECONDS = 2.0


async def metrics(_request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's metrics."""
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every configured dependency answers; 503 naming the ones that do not."""
    app = request.app
    checks: dict[str, str] = {"database": await _check(app, "database", _database_ping(app))}
    schema = request.app.get(SCHEMA_CHECK)
    if schema is not None and checks["database"] == "ok":
        # An un-migrated database answers SELECT 1 but fails every real query.
        checks["schema"] = await _schema(schema)
    redis = request.app.get(REDIS)
    if redis is not None:
        checks["redis"] = await _check(app, "redis", redis.ping())
    for name, key in (("kafka", KAFKA_INTAKE), ("rabbitmq", RABBITMQ_INTAKE)):
        source = request.app.get(key)
        if source is not None:
            checks[name] = source.status_line()
    failing = sorted(name for name, result in checks.items() if result != "ok")
    if failing:
        return json_response(
            {"status": "unavailable", "failing": failing, "checks": checks}, status=503
        )
    return json_response({"status": "ok", "checks": checks})


async def _database_ping(app: web.Application) -> None:
    async with app[DB_ENGINE].connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _schema(schema: SchemaCheck) -> str:
    try:
        problem = await asyncio.wait_for(schema.problem(), timeout=CHECK_TIMEOUT_SECONDS)
    except Exception as exc:  # the database went away between the two checks
        return f"error: {type(exc).__name__}: {exc}"[:200]
    return "ok" if problem is None else f"behind: {problem}"


async def _check(app: web.Application, name: str, probe: object) -> str:
    try:
        await asyncio.wait_for(probe, timeout=CHECK_TIMEOUT_SECONDS)  # type: ignore[arg-type]
    except Exception as exc:  # any failure means "not ready"; say which
        READINESS_LOG.warning(f"{id(app)}:{name}", "readiness check failed: %s", exc)
        return f"error: {type(exc).__name__}: {exc}"[:200]
    return "ok"
