// A real JavaScript client of the /notifications namespace, driven by tests/test_js_client.py.
//
// Usage: node notifications_client.mjs '<json config>'   (or the config as the first stdin line)
//
// Config:
//   url          hub base URL, e.g. "http://127.0.0.1:8004" (required)
//   token        JWT sent as auth.token (required)
//   last_seq     sent as auth.last_seq when present and not null
//   expect       number of `notification:new` events to wait for in total (default 0)
//   ready_after  optional: once this many `notification:new` have arrived (0: once connected),
//                print the line "READY" and read ONE JSON line from stdin whose keys
//                (expect, mark_read, expect_read) override the config; then go on
//   mark_read    optional list of ids: emit `notification:mark_read` {ids} with an ack
//   expect_read  number of `notification:read` events to wait for after the ack (default 0)
//   expect_updated  number of `notification:updated` events to wait for after the ack (default 0)
//   settle_ms    quiet time after the expected events, to catch extras/duplicates (default 300)
//   timeout_ms   bound on every wait (default 10000)
//
// Output: at most one "READY" line, then exactly one JSON line:
//   {"connected": true, "events": [notification:new payloads, in arrival order],
//    "others": [[event name, ...args] for every other event], "ack": {...}|null,
//    "error": "<why>"|absent}
// or, when the server refuses the connection:
//   {"connect_error": {"message": err.message, "data": err.data}}
// Exit code 0 when the run went as configured (a refusal included), 1 on a timeout or an
// unexpected failure (the JSON line then has "error"), 2 on a bad config.

import readline from "node:readline";
import { io } from "socket.io-client";

const NEW_EVENT = "notification:new";
const READ_EVENT = "notification:read";

const stdinLines = readline.createInterface({ input: process.stdin, terminal: false });
const queuedLines = [];
const lineWaiters = [];
let stdinClosed = false;
stdinLines.on("line", (line) => {
  const waiter = lineWaiters.shift();
  if (waiter) waiter(line);
  else queuedLines.push(line);
});
stdinLines.on("close", () => {
  stdinClosed = true;
  while (lineWaiters.length) lineWaiters.shift()(null);
});

function nextLine() {
  if (queuedLines.length) return Promise.resolve(queuedLines.shift());
  if (stdinClosed) return Promise.resolve(null);
  return new Promise((resolve) => lineWaiters.push(resolve));
}

function print(line) {
  return new Promise((resolve) => process.stdout.write(line + "\n", resolve));
}

async function finish(result, code) {
  await print(JSON.stringify(result));
  stdinLines.close();
  process.exit(code);
}

async function readConfig() {
  const text = process.argv[2] ?? (await nextLine());
  if (!text) throw new Error("no config: pass JSON as argv[2] or as the first stdin line");
  const config = JSON.parse(text);
  if (typeof config.url !== "string" || typeof config.token !== "string") {
    throw new Error("config needs string 'url' and 'token'");
  }
  return config;
}

let config;
try {
  config = await readConfig();
} catch (err) {
  await print(JSON.stringify({ error: `bad config: ${err.message}` }));
  process.exit(2);
}

const timeoutMs = config.timeout_ms ?? 10000;
const settleMs = config.settle_ms ?? 300;

const events = [];
const others = [];
let changed = () => {};
const result = { connected: false, events, others, ack: null };

function countOf(name) {
  return others.filter(([event]) => event === name).length;
}

// Resolves once predicate() holds; rejects after timeoutMs with `what` in the message.
function waitUntil(predicate, what) {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (predicate()) {
        clearTimeout(timer);
        changed = () => {};
        resolve();
      }
    };
    const timer = setTimeout(() => {
      changed = () => {};
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    changed = check;
    check();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const auth = { token: config.token };
if (config.last_seq !== undefined && config.last_seq !== null) auth.last_seq = config.last_seq;

const socket = io(`${config.url}/notifications`, {
  auth,
  transports: ["websocket"],
  reconnection: false,
  timeout: timeoutMs,
});

socket.on(NEW_EVENT, (notification) => {
  events.push(notification);
  changed();
});
socket.onAny((event, ...args) => {
  if (event !== NEW_EVENT) {
    others.push([event, ...args]);
    changed();
  }
});

const connected = new Promise((resolve, reject) => {
  socket.once("connect", resolve);
  socket.once("connect_error", reject);
});

try {
  try {
    await connected;
  } catch (err) {
    socket.close();
    await finish({ connect_error: { message: err.message, data: err.data ?? null } }, 0);
  }
  result.connected = true;
  socket.on("disconnect", (reason) => {
    if (reason === "io client disconnect") return; // our own socket.close()
    others.push(["disconnect", reason]);
    changed();
  });

  if (typeof config.ready_after === "number") {
    await waitUntil(() => events.length >= config.ready_after, `${config.ready_after} replayed ${NEW_EVENT}`);
    await print("READY");
    const line = await nextLine();
    if (line) Object.assign(config, JSON.parse(line));
  }

  const expect = config.expect ?? 0;
  await waitUntil(() => events.length >= expect, `${expect} ${NEW_EVENT} (got ${events.length})`);
  await sleep(settleMs); // anything arriving now is an extra (a duplicate or a stray)

  if (Array.isArray(config.mark_read)) {
    const readsBefore = countOf(READ_EVENT);
    const updatesBefore = countOf("notification:updated");
    result.ack = await socket.timeout(timeoutMs).emitWithAck("notification:mark_read", {
      ids: config.mark_read,
    });
    const expectRead = config.expect_read ?? 0;
    await waitUntil(
      () => countOf(READ_EVENT) - readsBefore >= expectRead,
      `${expectRead} ${READ_EVENT} after the ack`,
    );
    // Each read mark is also a notification:updated, sent right after it (maybe in a later
    // packet): wait for those too rather than close between the two.
    const expectUpdated = config.expect_updated ?? 0;
    await waitUntil(
      () => countOf("notification:updated") - updatesBefore >= expectUpdated,
      `${expectUpdated} notification:updated after the ack`,
    );
  }
  socket.close();
  await finish(result, 0);
} catch (err) {
  socket.close();
  result.error = err.message;
  await finish(result, 1);
}
