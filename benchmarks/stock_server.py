"""A stock python-socketio server doing what the hub does, the way the docs show it.

The baseline of ``benchmarks/fanout.py``: an ``AsyncServer`` on aiohttp (stdlib ``json``,
default settings), optionally with ``AsyncRedisManager`` for cross-process fan-out, and the
``/notifications`` namespace authenticating each socket with the same HS256 JWT and
placing it in a tenant room and a tenant+user room. Two trigger endpoints stand in for the
hub's REST routes:

- ``POST /bench/broadcast`` ``{"title", "body", "data"}``: one ``emit("broadcast")`` to the
  tenant room;
- ``POST /bench/per-user`` ``{"user_ids", "title", "body"}``: one multi-row INSERT (asyncpg,
  ``unnest``) of a row per user, then one awaited ``emit("notification:new")`` per user room
  with the notification object of docs/protocol.md.

Both need a bearer token with the ``service`` role (verified like the hub does). Not part
of the hub; run it only against 127.0.0.1. The JWT secret comes from ``--jwt-secret`` or
the ``BENCH_JWT_SECRET`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jwt
import socketio
from aiohttp import web

NAMESPACE = "/notifications"
APP_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool", asyncpg.Pool)

# The table of both peers (this server and benchmarks/node/server.js, which writes the same
# rows); fanout.py creates it before it starts any server.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_peer_notifications (
    id bigserial PRIMARY KEY,
    tenant_id varchar(64) NOT NULL,
    user_id varchar(128) NOT NULL,
    category varchar(64),
    title text NOT NULL,
    body text NOT NULL,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    link text,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at timestamptz
)
"""
INSERT_ROWS = """
INSERT INTO bench_peer_notifications (tenant_id, user_id, title, body, data)
SELECT $1, u, $3, $4, $5::jsonb FROM unnest($2::text[]) AS u
RETURNING id, user_id, created_at
"""


def tenant_room(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


def user_room(tenant_id: str, user_id: str) -> str:
    return f"user:{tenant_id}:{user_id}"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def decode(token: object, secret: str) -> dict[str, Any]:
    """The claims of a valid HS256 token with ``sub`` and ``tenant_id``; raises otherwise."""
    if not isinstance(token, str) or not token:
        raise jwt.InvalidTokenError("no token")
    claims: dict[str, Any] = jwt.decode(
        token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
    )
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("tenant_id"), str):
        raise jwt.InvalidTokenError("sub and tenant_id must be strings")
    return claims


class StockServer:
    """The socket handlers and trigger routes, written the way the python-socketio docs do."""

    def __init__(
        self, *, secret: str, redis_url: str | None, channel: str, database_url: str | None
    ) -> None:
        self.secret = secret
        self.database_url = database_url
        # None: python-socketio's default in-process manager.
        manager = socketio.AsyncRedisManager(redis_url, channel=channel) if redis_url else None
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", client_manager=manager, cors_allowed_origins="*"
        )
        self.sio.on("connect", self.connect, namespace=NAMESPACE)

    def app(self) -> web.Application:
        app = web.Application()
        self.sio.attach(app)
        app.cleanup_ctx.extend([self.database, self.start_manager])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/bench/broadcast", self.broadcast)
        app.router.add_post("/bench/per-user", self.per_user)
        return app

    async def connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        token = auth.get("token") if isinstance(auth, Mapping) else None
        try:
            claims = decode(token, self.secret)
        except jwt.InvalidTokenError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized", {"code": "unauthorized", "message": str(exc)}
            ) from None
        tenant, user = claims["tenant_id"], claims["sub"]
        await self.sio.enter_room(sid, tenant_room(tenant), namespace=NAMESPACE)
        await self.sio.enter_room(sid, user_room(tenant, user), namespace=NAMESPACE)

    def service_tenant(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        try:
            claims = decode(header.removeprefix("Bearer ").strip(), self.secret)
        except jwt.InvalidTokenError:
            raise web.HTTPUnauthorized() from None
        if "service" not in (claims.get("roles") or []):
            raise web.HTTPForbidden()
        tenant: str = claims["tenant_id"]
        return tenant

    async def broadcast(self, request: web.Request) -> web.Response:
        tenant = self.service_tenant(request)
        body = await request.json()
        payload = {"title": body["title"], "body": body["body"], "data": body.get("data") or {}}
        await self.sio.emit("broadcast", payload, room=tenant_room(tenant), namespace=NAMESPACE)
        return web.json_response({"status": "accepted"}, status=202)

    async def per_user(self, request: web.Request) -> web.Response:
        tenant = self.service_tenant(request)
        body = await request.json()
        user_ids: list[str] = sorted(set(body["user_ids"]))
        title, text, data = body["title"], body["body"], body.get("data") or {}
        async with request.app[APP_POOL].acquire() as connection:
            rows = await connection.fetch(
                INSERT_ROWS, tenant, user_ids, title, text, json.dumps(data)
            )
        for row in rows:
            notification = {
                "id": str(row["id"]),
                "tenant_id": tenant,
                "user_id": row["user_id"],
                "seq": row["id"],  # increasing per user (not dense; the hub's seq is)
                "category": None,
                "title": title,
                "body": text,
                "data": data,
                "link": None,
                "created_at": iso(row["created_at"]),
                "read_at": None,
                # The inbox fields of the hub's object (docs/protocol.md 5.1): same bytes.
                "seen_at": None,
                "archived_at": None,
                "expires_at": None,
            }
            await self.sio.emit(
                "notification:new",
                notification,
                room=user_room(tenant, row["user_id"]),
                namespace=NAMESPACE,
            )
        return web.json_response({"ids": [str(row["id"]) for row in rows]}, status=201)

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def database(self, app: web.Application) -> AsyncIterator[None]:
        if self.database_url is None:
            yield
            return
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=10)
        async with pool.acquire() as connection:
            await connection.execute(CREATE_TABLE)
        app[APP_POOL] = pool
        try:
            yield
        finally:
            await pool.close()

    async def start_manager(self, _app: web.Application) -> AsyncIterator[None]:
        # Like the hub: listen to Redis before the first client connects, not at it.
        if not self.sio.manager_initialized:
            self.sio.manager_initialized = True
            self.sio.manager.initialize()
        yield
        await self.sio.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Stock python-socketio server: the baseline of benchmarks/fanout.py."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8099, help="port (default 8099)")
    parser.add_argument("--redis-url", help="use AsyncRedisManager on this Redis")
    parser.add_argument(
        "--channel", default="bench-stock", help="AsyncRedisManager channel (default bench-stock)"
    )
    parser.add_argument(
        "--database-url",
        help="asyncpg DSN (postgresql://...) for POST /bench/per-user; the table is created",
    )
    parser.add_argument(
        "--jwt-secret",
        default=os.environ.get("BENCH_JWT_SECRET"),
        help="HS256 secret (default: $BENCH_JWT_SECRET)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop (default asyncio, what run_app uses out of the box)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.jwt_secret:
        print("stock_server: give --jwt-secret or BENCH_JWT_SECRET", file=sys.stderr)
        return 2
    if args.host not in {"127.0.0.1", "localhost", "::1"}:
        print("stock_server: benchmark servers listen on loopback only", file=sys.stderr)
        return 2
    if args.loop == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    app = StockServer(
        secret=args.jwt_secret,
        redis_url=args.redis_url,
        channel=args.channel,
        database_url=args.database_url,
    ).app()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
