// The Node socket.io v4 peer of benchmarks/fanout.py: what benchmarks/stock_server.py does,
// written the way the socket.io and node-postgres docs show it.
//
// - namespace /notifications: the HS256 JWT of the connect packet (auth.token) is checked
//   with jsonwebtoken, then the socket joins its tenant room and its tenant+user room;
// - POST /bench/broadcast {"title", "body", "data"}: one emit("broadcast") to the tenant room;
// - POST /bench/per-user {"user_ids", "title", "body", "data"}: one multi-row
//   INSERT ... RETURNING (pg, unnest) of a row per user, then one emit("notification:new")
//   per user room with the notification object of docs/protocol.md;
// - GET /healthz.
//
// Both POSTs need a bearer token with the "service" role. With --redis-url the server uses
// @socket.io/redis-adapter (node-redis clients), as the Python servers use a Redis manager.
// Loopback only; the JWT secret comes from --jwt-secret or BENCH_JWT_SECRET.
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const jwt = require("jsonwebtoken");
const { Pool } = require("pg");
const { Server } = require("socket.io");

const NAMESPACE = "/notifications";
const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);
// The table of benchmarks/stock_server.py (its CREATE_TABLE), which fanout.py creates
// before it starts any server: both peers store the same rows.
const INSERT_ROWS = `
INSERT INTO bench_peer_notifications (tenant_id, user_id, title, body, data)
SELECT $1, u, $3, $4, $5::jsonb FROM unnest($2::text[]) AS u
RETURNING id, user_id, created_at`;

const tenantRoom = (tenant) => `tenant:${tenant}`;
const userRoom = (tenant, user) => `user:${tenant}:${user}`;

function options() {
  const { values } = parseArgs({
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8098" },
      "redis-url": { type: "string" },
      channel: { type: "string", default: "bench-node" },
      "database-url": { type: "string" },
      "jwt-secret": { type: "string", default: process.env.BENCH_JWT_SECRET || "" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(
      "node server.js [--host 127.0.0.1] [--port 8098] [--redis-url URL] [--channel NAME]\n" +
        "               [--database-url postgresql://...] [--jwt-secret S | $BENCH_JWT_SECRET]",
    );
    process.exit(0);
  }
  if (!values["jwt-secret"]) fail("give --jwt-secret or BENCH_JWT_SECRET");
  if (!LOOPBACK.has(values.host)) fail("benchmark servers listen on loopback only");
  return values;
}

function fail(message) {
  console.error(`node server: ${message}`);
  process.exit(2);
}

// The claims of a valid HS256 token with exp, a string sub and tenant_id; throws otherwise
// (the same rules as stock_server.decode).
function decode(token, secret) {
  if (typeof token !== "string" || !token) throw new Error("no token");
  const claims = jwt.verify(token, secret, { algorithms: ["HS256"] });
  if (typeof claims.exp !== "number") throw new Error("exp is required");
  if (typeof claims.sub !== "string" || typeof claims.tenant_id !== "string") {
    throw new Error("sub and tenant_id must be strings");
  }
  return claims;
}

function readJson(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (error) {
        reject(error);
      }
    });
    request.on("error", reject);
  });
}

function answer(response, status, body) {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  response.end(text);
}

async function main() {
  const args = options();
  const secret = args["jwt-secret"];
  const pool = args["database-url"]
    ? new Pool({ connectionString: args["database-url"], max: 10 })
    : null;

  // Only the trigger routes and /healthz; socket.io answers /socket.io/ itself before this
  // handler sees the request.
  const server = http.createServer((request, response) => {
    route(request, response).catch((error) => {
      console.error(error);
      if (!response.headersSent) answer(response, 500, { error: String(error) });
    });
  });
  const io = new Server(server, { cors: { origin: "*" }, serveClient: false });
  const redisClients = [];
  if (args["redis-url"]) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: args["redis-url"] });
    const sub = pub.duplicate();
    for (const client of [pub, sub]) client.on("error", (error) => console.error(error));
    await Promise.all([pub.connect(), sub.connect()]);
    redisClients.push(pub, sub);
    io.adapter(createAdapter(pub, sub, { key: args.channel }));
  }
  const notifications = io.of(NAMESPACE);

  notifications.use((socket, next) => {
    try {
      const claims = decode(socket.handshake.auth && socket.handshake.auth.token, secret);
      socket.data.tenant = claims.tenant_id;
      socket.data.user = claims.sub;
      next();
    } catch (error) {
      const refused = new Error("unauthorized");
      refused.data = { code: "unauthorized", message: error.message };
      next(refused);
    }
  });
  notifications.on("connection", (socket) => {
    socket.join([tenantRoom(socket.data.tenant), userRoom(socket.data.tenant, socket.data.user)]);
  });

  function serviceTenant(request) {
    const header = request.headers.authorization || "";
    let claims;
    try {
      claims = decode(header.replace(/^Bearer /, "").trim(), secret);
    } catch {
      return { status: 401 };
    }
    if (!(claims.roles || []).includes("service")) return { status: 403 };
    return { tenant: claims.tenant_id };
  }

  async function route(request, response) {
    const path = request.url.split("?", 1)[0];
    if (request.method === "GET" && path === "/healthz") return answer(response, 200, { ok: true });
    if (request.method !== "POST" || !["/bench/broadcast", "/bench/per-user"].includes(path)) {
      return answer(response, 404, { error: "not found" });
    }
    const { tenant, status } = serviceTenant(request);
    if (!tenant) {
      request.resume();
      return answer(response, status, { error: "unauthorized" });
    }
    const body = await readJson(request);
    if (path === "/bench/broadcast") {
      const payload = { title: body.title, body: body.body, data: body.data || {} };
      notifications.to(tenantRoom(tenant)).emit("broadcast", payload);
      return answer(response, 202, { status: "accepted" });
    }
    const userIds = [...new Set(body.user_ids)].sort();
    const data = body.data || {};
    const { rows } = await pool.query(INSERT_ROWS, [
      tenant,
      userIds,
      body.title,
      body.body,
      JSON.stringify(data),
    ]);
    for (const row of rows) {
      notifications.to(userRoom(tenant, row.user_id)).emit("notification:new", {
        id: String(row.id),
        tenant_id: tenant,
        user_id: row.user_id,
        // pg returns bigint as a string; the protocol's seq is a number (here the row id,
        // increasing per user like the stock server's, not dense like the hub's).
        seq: Number(row.id),
        category: null,
        title: body.title,
        body: body.body,
        data,
        link: null,
        created_at: row.created_at.toISOString(),
        read_at: null,
        // The inbox fields of the hub's object (docs/protocol.md 5.1): same bytes.
        seen_at: null,
        archived_at: null,
        expires_at: null,
      });
    }
    return answer(response, 201, { ids: rows.map((row) => String(row.id)) });
  }

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    // fanout.py sends SIGKILL after 10 s; leave sooner even if a client never closes.
    setTimeout(() => process.exit(0), 5000).unref();
    io.close(async () => {
      await Promise.allSettled([
        ...(pool ? [pool.end()] : []),
        ...redisClients.map((client) => client.quit()),
      ]);
      process.exit(0);
    });
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  server.listen(Number(args.port), args.host);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
