// Two official socket.io-client sockets on /chat (sender and recipient), driven by
// tests/test_js_client.py.
//
// Usage: node chat_client.mjs '{"url", "sender_token", "recipient_token", "to_user_id", "body"}'
// Prints one JSON line {"ack", "sender_got", "recipient_got"} and exits 0, or
// {"error": "..."} and exits 1.

import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
const TIMEOUT_MS = config.timeout_ms ?? 10000;

function connect(token) {
  const socket = io(`${config.url}/chat`, {
    auth: { token },
    transports: ["websocket"],
    reconnection: false,
  });
  const received = [];
  socket.on("message:new", (message) => received.push(message));
  const ready = new Promise((resolve, reject) => {
    socket.on("connect", resolve);
    socket.on("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
  });
  return { socket, received, ready };
}

async function waitFor(check) {
  const deadline = Date.now() + TIMEOUT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out waiting for message:new");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const sender = connect(config.sender_token);
const recipient = connect(config.recipient_token);
try {
  await Promise.all([sender.ready, recipient.ready]);
  const ack = await sender.socket.timeout(TIMEOUT_MS).emitWithAck("message:send", {
    to_user_id: config.to_user_id,
    body: config.body,
    client_msg_id: "js-1",
  });
  await waitFor(() => sender.received.length >= 1 && recipient.received.length >= 1);
  await new Promise((resolve) => setTimeout(resolve, 200)); // a duplicate would arrive by now
  console.log(
    JSON.stringify({ ack, sender_got: sender.received, recipient_got: recipient.received }),
  );
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ error: String(err) }));
  process.exit(1);
} finally {
  sender.socket.close();
  recipient.socket.close();
}
