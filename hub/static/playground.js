/*
 * NotifyHub playground: a notification center and a 1-on-1 chat driven by the official
 * socket.io-client (window.io, from socket.io.min.js served beside this file).
 *
 * Plain browser JavaScript, no build step. Every piece of user or server data reaches the
 * page through textContent, never innerHTML.
 *
 * Storage:
 *   sessionStorage  the token and the open chat peer (per tab, so two tabs can be two users,
 *                   and a reload reconnects);
 *   localStorage    the newest notification seq seen, per tenant and user: on the next
 *                   connect it goes to the hub as auth.last_seq, which replays what was missed.
 * Chat resumes the same way within a page's life: the newest seq seen per conversation goes
 * to /chat as auth.last_seqs on every reconnect.
 */
(function () {
  "use strict";

  const TOKEN_KEY = "notifyhub.playground.token";
  const PEER_KEY = "notifyhub.playground.peer";
  const ACK_TIMEOUT_MS = 10000;
  const TYPING_REFRESH_MS = 2000; // the hub relays at most one typing:true per 2 s
  const TYPING_IDLE_MS = 3000; // stop "typing" after this long without a keystroke
  const PEER_TYPING_MAX_MS = 7000; // hide the peer's indicator if no typing:false arrives
  const MAX_NOTIFICATIONS_SHOWN = 100;
  const MAX_REPLAY = 100; // resume at most this many notifications behind the newest
  const MAX_LOG_ENTRIES = 200;

  // ---------------------------------------------------------------------------------------
  // Small helpers

  const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function formatTime(iso) {
    const moment = iso ? new Date(iso) : null;
    if (!moment || Number.isNaN(moment.getTime())) return "";
    return moment.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function newClientMsgId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // randomUUID needs a secure context (https or localhost); getRandomValues does not.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** The claims of a JWT, read without verifying it (the hub verifies). */
  function decodeJwt(token) {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
      const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      if (typeof claims !== "object" || claims === null) return null;
      return claims;
    } catch (_err) {
      return null;
    }
  }

  /** Ids are strings of digits; compare them as numbers. */
  function idAtMost(id, limit) {
    try {
      return BigInt(id) <= BigInt(limit);
    } catch (_err) {
      return false;
    }
  }

  /** A link only when it is a relative path or an http(s) URL (never javascript: etc.). */
  function safeHref(link) {
    if (typeof link !== "string" || !link) return null;
    if (link.startsWith("/") && !link.startsWith("//")) return link;
    try {
      const url = new URL(link);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_err) {
      return null;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Page elements

  const ui = {
    mintForm: document.getElementById("mint-form"),
    tokenForm: document.getElementById("token-form"),
    tokenInput: byTestId("token-input"),
    disconnect: byTestId("disconnect-button"),
    identity: byTestId("identity"),
    error: byTestId("error"),
    badge: byTestId("unread-badge"),
    unseenBadge: byTestId("unseen-badge"),
    markAllSeen: byTestId("mark-all-seen"),
    notifStatus: byTestId("notifications-status"),
    markAll: byTestId("mark-all"),
    announcement: byTestId("announcement"),
    notifList: byTestId("notification-list"),
    notifEmpty: byTestId("notifications-empty"),
    chatStatus: byTestId("chat-status"),
    peerForm: document.getElementById("peer-form"),
    peerInput: byTestId("peer-input"),
    peerOpen: byTestId("peer-open"),
    conversationList: byTestId("conversation-list"),
    threadTitle: byTestId("thread-title"),
    peerPresence: byTestId("peer-presence"),
    editCancel: byTestId("edit-cancel"),
    messages: byTestId("message-list"),
    typing: byTestId("typing-indicator"),
    composer: document.getElementById("composer"),
    composerInput: byTestId("composer-input"),
    send: byTestId("send-button"),
    log: byTestId("event-log"),
  };

  // The preferences panel lives in preferences.js (loaded first); it reaches the hub through
  // the identity's request function that start() hands it.
  const preferences = window.NotifyHubPreferences.createPanel({
    root: byTestId("preferences-panel"),
    el,
    log: (kind, data) => log(kind, data),
    showError: (message) => showError(message),
  });

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = !message;
    if (message) log("error", message);
  }

  function log(kind, data) {
    let text = typeof data === "string" ? data : JSON.stringify(data);
    if (text && text.length > 400) text = text.slice(0, 400) + "…";
    const time = new Date().toLocaleTimeString();
    ui.log.prepend(
      el("li", {}, el("time", { text: time }), el("b", { text: kind }), el("code", { text }))
    );
    while (ui.log.childElementCount > MAX_LOG_ENTRIES) ui.log.lastElementChild.remove();
  }

  function setConn(node, state, text) {
    node.dataset.state = state;
    node.textContent = text || state;
  }

  // ---------------------------------------------------------------------------------------
  // State of one connected identity; replaced on every (re)connect with another token

  let session = null;

  function newSession(token, claims) {
    return {
      token,
      tenant: String(claims.tenant_id),
      user: String(claims.sub),
      expiresAt: typeof claims.exp === "number" ? claims.exp : null,
      manager: null,
      notif: null,
      chat: null,
      notifConnectedBefore: false,
      chatConnectedBefore: false,
      // notifications
      notifications: new Map(), // id -> notification
      unreadCount: 0,
      unseenCount: 0,
      baselineSeq: 0, // newest seq the REST list (and its unread_count) covered
      lastSeq: 0, // newest seq seen; auth.last_seq on (re)connect
      // chat
      conversations: new Map(), // id -> conversation
      peer: null,
      conversationId: null,
      messages: new Map(), // id -> message of the open conversation
      chatSeqs: new Map(), // conversation id -> newest seq seen; auth.last_seqs on reconnect
      editingId: null, // the message of ours the composer is editing
      peerStatus: null, // {status, last_seen_at} of the open conversation's peer
      pending: new Map(), // client_msg_id -> {body, status, error}
      peerReadId: null, // newest message id the peer has read
      readSentSeq: 0, // newest peer message we sent a read receipt for
      readCandidate: null, // {id, seq} newest visible peer message
      typingActive: false,
      typingSentAt: 0,
      typingIdleTimer: null,
      peerTypingTimer: null,
      expiryTimer: null,
    };
  }

  const lastSeqKey = (s) => "notifyhub.playground.last_seq:" + JSON.stringify([s.tenant, s.user]);
  // The newest of our messages the peer has read, as far as this browser has seen: the read
  // pointer only moves forward, so a remembered receipt stays true after a reload.
  const peerReadKey = (s) =>
    "notifyhub.playground.peer_read:" + JSON.stringify([s.tenant, s.user, s.conversationId]);

  function storedLastSeq(s) {
    const value = Number(localStorage.getItem(lastSeqKey(s)));
    return Number.isSafeInteger(value) && value > 0 ? value : null;
  }

  function rememberSeq(s, seq) {
    if (typeof seq === "number" && seq > s.lastSeq) {
      s.lastSeq = seq;
      localStorage.setItem(lastSeqKey(s), String(seq));
    }
  }

  // ---------------------------------------------------------------------------------------
  // REST

  async function api(s, method, path, body) {
    const headers = { Authorization: "Bearer " + s.token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new Error(`${method} ${path}: ${response.status} ${error.message || response.statusText}`);
    }
    return data;
  }

  // ---------------------------------------------------------------------------------------
  // Connecting and disconnecting

  async function start(token) {
    stop();
    showError("");
    const claims = decodeJwt(token);
    if (!claims || claims.sub === undefined || claims.tenant_id === undefined) {
      showError("That is not a JWT with 'sub' and 'tenant_id' claims.");
      return;
    }
    const s = newSession(token, claims);
    session = s;
    sessionStorage.setItem(TOKEN_KEY, token);
    ui.tokenInput.value = token;
    renderIdentity(s);
    setControlsEnabled(true);
    preferences.attach((method, path, body) => api(s, method, path, body));
    if (s.expiresAt) {
      const delay = s.expiresAt * 1000 - Date.now();
      s.expiryTimer = setTimeout(() => {
        if (session === s) showError("The token has expired: mint or paste a new one.");
      }, Math.max(0, Math.min(delay, 2 ** 31 - 1)));
    }

    try {
      await loadNotifications(s);
    } catch (err) {
      if (session === s) showError(err.message);
      return;
    }
    if (session !== s) return;
    if (typeof window.io !== "function") {
      showError("socket.io-client did not load (/playground/static/socket.io.min.js).");
      return;
    }
    connectSockets(s);
    loadConversations(s).catch((err) => session === s && showError(err.message));
    const peer = sessionStorage.getItem(PEER_KEY);
    if (peer && peer !== s.user) openPeer(s, peer);
  }

  function stop() {
    const s = session;
    session = null;
    if (s) {
      stopTyping(s);
      if (s.notif) s.notif.disconnect();
      if (s.chat) s.chat.disconnect();
      clearTimeout(s.expiryTimer);
      clearTimeout(s.peerTypingTimer);
      clearTimeout(s.typingIdleTimer);
    }
    if (readObserver) readObserver.disconnect();
    preferences.detach();
    ui.notifList.replaceChildren();
    ui.conversationList.replaceChildren();
    ui.messages.replaceChildren();
    ui.typing.hidden = true;
    ui.announcement.hidden = true;
    ui.threadTitle.textContent = "Pick a conversation or enter a user id";
    ui.peerPresence.hidden = true;
    endEditing();
    setConn(ui.notifStatus, "offline");
    setConn(ui.chatStatus, "offline");
    renderBadge(null);
    renderIdentity(null);
    setControlsEnabled(false);
    ui.notifEmpty.hidden = false;
  }

  function setControlsEnabled(on) {
    ui.peerInput.disabled = !on;
    ui.peerOpen.disabled = !on;
    const canWrite = on && Boolean(session && session.peer);
    ui.composerInput.disabled = !canWrite;
    ui.send.disabled = !canWrite;
  }

  function renderIdentity(s) {
    if (!s) {
      ui.identity.textContent = "Not connected";
      return;
    }
    let text = `${s.user} @ tenant ${s.tenant}`;
    if (s.expiresAt) text += ` · token expires ${formatTime(new Date(s.expiresAt * 1000).toISOString())}`;
    ui.identity.textContent = text;
    if (ui.mintForm) {
      ui.mintForm.elements.tenant.value = s.tenant;
      ui.mintForm.elements.user.value = s.user;
    }
  }

  function connectSockets(s) {
    // One Manager per identity: both namespaces share its connection, and disconnecting
    // both sockets closes it (io() would reuse a cached Manager across tokens).
    s.manager = new window.io.Manager(window.location.origin, {
      path: "/socket.io",
      reconnectionDelayMax: 5000,
      timeout: ACK_TIMEOUT_MS,
    });
    // auth is a function, so every reconnect resumes from the newest seq seen.
    s.notif = s.manager.socket("/notifications", {
      auth: (send) => send({ token: s.token, last_seq: s.lastSeq }),
    });
    s.chat = s.manager.socket("/chat", {
      auth: (send) => send({ token: s.token, last_seqs: Object.fromEntries(s.chatSeqs) }),
    });
    bindNotificationEvents(s);
    bindChatEvents(s);
  }

  function describeDisconnect(reason) {
    return reason === "io server disconnect" ? "disconnected by the hub (token expired?)" : reason;
  }

  function connectError(err) {
    const why = (err.data && err.data.message) || err.message;
    return `${err.message === "unauthorized" ? "refused" : "error"}: ${why}`;
  }

  // ---------------------------------------------------------------------------------------
  // Notifications

  async function loadNotifications(s) {
    const page = await api(s, "GET", "/api/notifications/?limit=50");
    if (session !== s) return;
    for (const item of page.items) s.notifications.set(String(item.id), item);
    s.baselineSeq = page.items.reduce((max, item) => Math.max(max, item.seq), 0);
    s.unreadCount = page.unread_count;
    s.unseenCount = page.unseen_count;
    // Resume from the last seq this browser saw (replaying what arrived while away), but
    // never from beyond what the hub has, nor from too far back.
    const stored = storedLastSeq(s);
    const floor = Math.max(0, s.baselineSeq - MAX_REPLAY);
    s.lastSeq = stored === null ? s.baselineSeq : Math.min(Math.max(stored, floor), s.baselineSeq);
    if (stored === null) rememberSeq(s, s.baselineSeq);
    renderNotifications(s);
  }

  function bindNotificationEvents(s) {
    const socket = s.notif;
    socket.on("connect", () => {
      setConn(ui.notifStatus, "connected");
      log("notifications", "connected (auth.last_seq " + s.lastSeq + ")");
      if (s.notifConnectedBefore) refreshUnreadCount(s);
      s.notifConnectedBefore = true;
    });
    socket.on("disconnect", (reason) => {
      setConn(ui.notifStatus, "offline", "offline: " + describeDisconnect(reason));
      log("notifications", "disconnected: " + reason);
    });
    socket.on("connect_error", (err) => {
      setConn(ui.notifStatus, "error", connectError(err));
      log("notifications", connectError(err));
    });
    socket.on("notification:new", (item) => {
      log("notification:new", item);
      if (session === s) addNotification(s, item);
    });
    socket.on("notification:read", (change) => {
      log("notification:read", change);
      if (session === s) applyRead(s, change);
    });
    socket.on("notification:updated", (change) => {
      log("notification:updated", change);
      if (session === s) applyUpdated(s, change);
    });
    socket.on("preferences:updated", (update) => {
      log("preferences:updated", update);
      if (session === s) preferences.show(update);
    });
    socket.on("broadcast", (announcement) => {
      log("broadcast", announcement);
      if (session !== s || !announcement) return;
      ui.announcement.replaceChildren(
        el("b", { text: String(announcement.title || "Announcement") }),
        " ",
        String(announcement.body || "")
      );
      ui.announcement.hidden = false;
    });
  }

  async function refreshUnreadCount(s) {
    try {
      const data = await api(s, "GET", "/api/notifications/unread-count/");
      if (session !== s) return;
      s.unreadCount = data.unread_count;
      s.unseenCount = data.unseen_count;
      renderBadge(s);
    } catch (err) {
      showError(err.message);
    }
  }

  function addNotification(s, item) {
    const id = String(item.id);
    const known = s.notifications.has(id);
    // The REST unread_count already covers everything up to baselineSeq.
    if (!known && item.read_at == null && item.seq > s.baselineSeq) s.unreadCount += 1;
    if (!known && item.seen_at == null && item.seq > s.baselineSeq) s.unseenCount += 1;
    // The list shows what is not archived (a replay brings archived ones too).
    if (item.archived_at != null) {
      rememberSeq(s, item.seq);
      return;
    }
    s.notifications.set(id, item);
    rememberSeq(s, item.seq);
    renderNotifications(s);
  }

  function applyRead(s, change) {
    const now = new Date().toISOString();
    const ids = change.all ? null : new Set((change.ids || []).map(String));
    for (const [id, item] of s.notifications) {
      if (item.read_at == null && (ids === null || ids.has(id))) item.read_at = now;
    }
    if (typeof change.unread_count === "number") s.unreadCount = change.unread_count;
    renderNotifications(s);
  }

  // Every change on any device (and the counts after it); the end of a replay carries no
  // ids and no changes, only the counts.
  function applyUpdated(s, change) {
    const changes = change.changes || {};
    const ids = change.all ? null : new Set((change.ids || []).map(String));
    let missing = false;
    for (const [id, item] of s.notifications) {
      if (ids !== null && !ids.has(id)) continue;
      if (changes.deleted || changes.archived_at) {
        // Archive all archives the read ones only.
        if (changes.deleted || ids !== null || item.read_at != null) s.notifications.delete(id);
        continue;
      }
      for (const key of ["read_at", "seen_at"]) {
        if (!(key in changes)) continue;
        // "All" changes only those not in that state yet: they keep their earlier times.
        if (ids === null && changes[key] != null && item[key] != null) continue;
        item[key] = changes[key];
      }
      if (changes.read_at) item.seen_at = item.seen_at || changes.read_at;
    }
    if ("archived_at" in changes && changes.archived_at == null) missing = true;
    if (typeof change.unread_count === "number") s.unreadCount = change.unread_count;
    if (typeof change.unseen_count === "number") s.unseenCount = change.unseen_count;
    renderNotifications(s);
    // Unarchived items are not in the list: read it again.
    if (missing) loadNotifications(s).catch((err) => showError(err.message));
  }

  async function inboxAction(s, action, payload) {
    try {
      const path =
        action === "delete"
          ? `/api/notifications/${encodeURIComponent(payload.ids[0])}/`
          : `/api/notifications/${action}/`;
      const reply = await api(s, action === "delete" ? "DELETE" : "POST", path, action === "delete" ? undefined : payload);
      log(action + " reply", reply);
    } catch (err) {
      showError(err.message);
    }
  }

  async function markRead(s, payload) {
    try {
      const ack = await s.notif.timeout(ACK_TIMEOUT_MS).emitWithAck("notification:mark_read", payload);
      log("notification:mark_read ack", ack);
      if (session !== s) return;
      if (!ack || !ack.ok) {
        showError("mark read: " + ((ack && ack.error && ack.error.message) || "refused"));
        return;
      }
      applyRead(s, { ...payload, unread_count: ack.unread_count });
    } catch (_err) {
      showError("mark read: no answer from the hub");
    }
  }

  function renderBadge(s) {
    const count = s ? s.unreadCount : 0;
    const unseen = s ? s.unseenCount : 0;
    ui.badge.textContent = String(count);
    ui.badge.classList.toggle("zero", count === 0);
    ui.unseenBadge.textContent = String(unseen);
    ui.unseenBadge.classList.toggle("zero", unseen === 0);
    ui.markAll.disabled = !s || count === 0;
    ui.markAllSeen.disabled = !s || unseen === 0;
    document.title = count > 0 ? `(${count}) NotifyHub playground` : "NotifyHub playground";
  }

  function renderNotifications(s) {
    for (const item of s.notifications.values()) preferences.seeCategory(item.category);
    const items = Array.from(s.notifications.values())
      .sort((a, b) => b.seq - a.seq)
      .slice(0, MAX_NOTIFICATIONS_SHOWN);
    ui.notifList.replaceChildren(...items.map((item) => notificationItem(s, item)));
    ui.notifEmpty.hidden = items.length > 0;
    renderBadge(s);
  }

  function notificationItem(s, item) {
    const unread = item.read_at == null;
    const unseen = item.seen_at == null;
    const id = String(item.id);
    const button = (text, testid, onclick) =>
      el("button", { type: "button", className: "link", text, dataset: { testid }, onclick });
    const href = safeHref(item.link);
    const title = href
      ? el("a", { href, text: String(item.title), rel: "noopener noreferrer" })
      : document.createTextNode(String(item.title));
    const meta = [item.category, formatTime(item.created_at), "#" + item.seq].filter(Boolean);
    return el(
      "li",
      {
        className: ["notification", unread ? "unread" : "", unseen ? "unseen" : ""].join(" ").trim(),
        dataset: { testid: "notification-item", id, unread: String(unread), unseen: String(unseen) },
      },
      el("div", { className: "title" }, title),
      item.body ? el("div", { className: "body", text: String(item.body) }) : null,
      el("div", { className: "meta", text: meta.join(" · ") }),
      el(
        "div",
        { className: "actions" },
        unread ? button("Mark read", "mark-read", () => markRead(s, { ids: [id] })) : null,
        unseen ? button("Mark seen", "mark-seen", () => inboxAction(s, "mark-as-seen", { ids: [id] })) : null,
        button("Archive", "archive", () => inboxAction(s, "archive", { ids: [id] })),
        button("Delete", "delete", () => inboxAction(s, "delete", { ids: [id] }))
      )
    );
  }

  // ---------------------------------------------------------------------------------------
  // Chat

  function peerOf(s, conversation) {
    return conversation.participants.find((p) => p !== s.user) || s.user;
  }

  async function loadConversations(s) {
    const page = await api(s, "GET", "/api/conversations/?limit=50");
    if (session !== s) return;
    s.conversations = new Map(page.items.map((c) => [String(c.id), c]));
    if (s.peer && !s.conversationId) {
      const found = findConversationWith(s, s.peer);
      if (found) {
        s.conversationId = String(found.id);
        await loadHistory(s);
      }
    }
    renderConversations(s);
  }

  function findConversationWith(s, peer) {
    for (const conversation of s.conversations.values()) {
      if (peerOf(s, conversation) === peer) return conversation;
    }
    return null;
  }

  function renderConversations(s) {
    const items = Array.from(s.conversations.values()).sort((a, b) => {
      const at = (a.last_message && a.last_message.created_at) || "";
      const bt = (b.last_message && b.last_message.created_at) || "";
      return at < bt ? 1 : at > bt ? -1 : 0;
    });
    ui.conversationList.replaceChildren(
      ...items.map((conversation) => {
        const peer = peerOf(s, conversation);
        const last = conversation.last_message;
        const active = String(conversation.id) === s.conversationId;
        return el(
          "li",
          {},
          el(
            "button",
            {
              type: "button",
              className: active ? "conversation active" : "conversation",
              dataset: { testid: "conversation-item", peer },
              onclick: () => openPeer(s, peer),
            },
            el("span", { className: "peer", text: peer }),
            conversation.unread_count > 0 && !active
              ? el("span", { className: "badge", text: String(conversation.unread_count) })
              : null,
            el("span", { className: "preview", text: last ? String(last.body) : "" })
          )
        );
      })
    );
  }

  async function openPeer(s, peer) {
    peer = peer.trim();
    if (!peer) return;
    if (peer === s.user) {
      showError("Pick another user: a conversation with yourself is not allowed.");
      return;
    }
    stopTyping(s);
    s.peer = peer;
    sessionStorage.setItem(PEER_KEY, peer);
    ui.peerInput.value = peer;
    const conversation = findConversationWith(s, peer);
    s.conversationId = conversation ? String(conversation.id) : null;
    s.messages = new Map();
    s.pending = new Map();
    s.peerReadId = null;
    s.readSentSeq = 0;
    s.readCandidate = null;
    s.peerStatus = null;
    endEditing();
    ui.typing.hidden = true;
    ui.threadTitle.textContent = "Chat with " + peer;
    setControlsEnabled(true);
    renderConversations(s);
    renderThread(s);
    loadPeerPresence(s).catch((err) => showError(err.message));
    if (s.conversationId) {
      try {
        await loadHistory(s);
      } catch (err) {
        showError(err.message);
      }
    }
  }

  async function loadHistory(s) {
    const id = s.conversationId;
    if (s.peerReadId === null) s.peerReadId = localStorage.getItem(peerReadKey(s));
    const page = await api(s, "GET", `/api/conversations/${encodeURIComponent(id)}/messages/?limit=50`);
    if (session !== s || s.conversationId !== id) return;
    for (const message of page.items) {
      s.messages.set(String(message.id), message);
      rememberChatSeq(s, message);
      if (message.sender_id === s.user && message.client_msg_id) s.pending.delete(message.client_msg_id);
    }
    renderThread(s);
  }

  function bindChatEvents(s) {
    const socket = s.chat;
    socket.on("connect", () => {
      setConn(ui.chatStatus, "connected");
      log("chat", "connected");
      if (s.chatConnectedBefore) {
        // Messages sent while we were away: reload the list and the open conversation.
        loadConversations(s).catch((err) => showError(err.message));
        if (s.conversationId) loadHistory(s).catch((err) => showError(err.message));
      }
      if (s.peer) loadPeerPresence(s).catch((err) => showError(err.message));
      s.chatConnectedBefore = true;
    });
    socket.on("disconnect", (reason) => {
      setConn(ui.chatStatus, "offline", "offline: " + describeDisconnect(reason));
      log("chat", "disconnected: " + reason);
      s.typingActive = false;
    });
    socket.on("connect_error", (err) => {
      setConn(ui.chatStatus, "error", connectError(err));
      log("chat", connectError(err));
    });
    socket.on("message:new", (message) => {
      log("message:new", message);
      if (session === s) onMessage(s, message);
    });
    socket.on("typing", (event) => {
      log("typing", event);
      if (session === s) onPeerTyping(s, event);
    });
    socket.on("message:read", (event) => {
      log("message:read", event);
      if (session === s) onRead(s, event);
    });
    socket.on("message:updated", (message) => {
      log("message:updated", message);
      if (session === s) onUpdated(s, message);
    });
    socket.on("presence", (event) => {
      log("presence", event);
      if (session === s && event.user_id === s.peer) renderPeerPresence(s, event);
    });
  }

  function rememberChatSeq(s, message) {
    const id = String(message.conversation_id);
    if (!(message.seq <= (s.chatSeqs.get(id) || 0))) s.chatSeqs.set(id, message.seq);
  }

  // An edit or a delete: the message is replaced where it is shown (thread, list preview).
  function onUpdated(s, message) {
    const id = String(message.id);
    if (s.messages.has(id)) {
      s.messages.set(id, message);
      renderThread(s);
    }
    const conversation = s.conversations.get(String(message.conversation_id));
    if (conversation && conversation.last_message && String(conversation.last_message.id) === id) {
      conversation.last_message = message;
      renderConversations(s);
    }
    if (s.editingId === id && message.deleted_at) endEditing();
  }

  // Presence: asked once when a conversation opens (and after a reconnect), then kept by
  // the hub's presence events, which report changes only.
  async function loadPeerPresence(s) {
    const peer = s.peer;
    const page = await api(s, "GET", "/api/presence/?user_ids=" + encodeURIComponent(peer));
    if (session === s && s.peer === peer) renderPeerPresence(s, page.items[0]);
  }

  function renderPeerPresence(s, status) {
    s.peerStatus = status;
    const online = status.status === "online";
    ui.peerPresence.dataset.status = online ? "online" : "offline";
    ui.peerPresence.textContent = online
      ? "online"
      : status.last_seen_at
        ? "last seen " + formatTime(status.last_seen_at)
        : "offline";
    ui.peerPresence.hidden = false;
  }

  function startEditing(s, message) {
    s.editingId = String(message.id);
    ui.composer.classList.add("editing");
    ui.composerInput.value = String(message.body);
    ui.composerInput.focus();
    ui.send.textContent = "Save";
    ui.editCancel.hidden = false;
  }

  function endEditing() {
    if (session) session.editingId = null;
    ui.composer.classList.remove("editing");
    ui.send.textContent = "Send";
    ui.editCancel.hidden = true;
  }

  async function changeMessage(s, event, payload) {
    let ack;
    try {
      ack = await s.chat.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
    } catch (_err) {
      ack = { ok: false, error: { message: "no answer from the hub" } };
    }
    log(event + " ack", ack);
    if (session !== s) return;
    if (ack && ack.ok) onUpdated(s, ack.message);
    else showError(`${event}: ${(ack && ack.error && ack.error.message) || "refused"}`);
  }

  function onMessage(s, message) {
    rememberChatSeq(s, message);
    const conversationId = String(message.conversation_id);
    const conversation = s.conversations.get(conversationId);
    if (!conversation) {
      // A new conversation: the list tells who it is with (and adopts it if it is ours).
      loadConversations(s)
        .then(() => {
          if (session === s && s.conversationId === conversationId) addMessage(s, message);
        })
        .catch((err) => showError(err.message));
      return;
    }
    conversation.last_message = message;
    const open = conversationId === s.conversationId;
    if (message.sender_id !== s.user && !open) conversation.unread_count += 1;
    renderConversations(s);
    if (open) addMessage(s, message);
  }

  function addMessage(s, message) {
    s.messages.set(String(message.id), message);
    if (message.client_msg_id) s.pending.delete(message.client_msg_id);
    if (message.sender_id === s.peer) ui.typing.hidden = true;
    renderThread(s);
  }

  function onPeerTyping(s, event) {
    if (String(event.conversation_id) !== s.conversationId || event.user_id !== s.peer) return;
    clearTimeout(s.peerTypingTimer);
    if (event.typing) {
      ui.typing.textContent = s.peer + " is typing…";
      ui.typing.hidden = false;
      s.peerTypingTimer = setTimeout(() => (ui.typing.hidden = true), PEER_TYPING_MAX_MS);
    } else {
      ui.typing.hidden = true;
    }
  }

  function onRead(s, event) {
    const conversationId = String(event.conversation_id);
    if (event.user_id === s.user) {
      // Read on this or another device of ours: the list's unread counts changed.
      const conversation = s.conversations.get(conversationId);
      if (conversation && conversation.last_message && idAtMost(conversation.last_message.id, event.message_id)) {
        conversation.unread_count = 0;
        renderConversations(s);
      }
      return;
    }
    if (conversationId !== s.conversationId || event.user_id !== s.peer) return;
    if (s.peerReadId === null || !idAtMost(event.message_id, s.peerReadId)) {
      s.peerReadId = String(event.message_id);
      localStorage.setItem(peerReadKey(s), s.peerReadId);
      renderThread(s);
    }
  }

  async function sendMessage(s, body, clientMsgId) {
    const peer = s.peer;
    s.pending.set(clientMsgId, { body, status: "sending", error: null, peer });
    renderThread(s);
    let ack;
    try {
      ack = await s.chat.timeout(ACK_TIMEOUT_MS).emitWithAck("message:send", {
        to_user_id: peer,
        body,
        client_msg_id: clientMsgId,
      });
    } catch (_err) {
      ack = { ok: false, error: { message: "no answer from the hub" } };
    }
    log("message:send ack", ack);
    if (session !== s) return;
    if (ack && ack.ok) {
      const message = ack.message;
      if (s.peer === peer) {
        if (!s.conversationId) {
          s.conversationId = String(message.conversation_id);
          if (!s.conversations.has(s.conversationId)) {
            loadConversations(s).catch((err) => showError(err.message));
          }
        }
        if (String(message.conversation_id) === s.conversationId) addMessage(s, message);
      }
      s.pending.delete(clientMsgId);
      renderThread(s);
      return;
    }
    const pending = s.pending.get(clientMsgId);
    if (pending) {
      pending.status = "failed";
      pending.error = (ack && ack.error && ack.error.message) || "refused";
    }
    renderThread(s);
  }

  // Typing: typing:true on keystrokes (refreshed at most every 2 s), typing:false after an
  // idle pause, on blur and when the message is sent.
  function onComposerInput(s) {
    if (!s.conversationId || !s.chat || !s.chat.connected) return;
    if (!ui.composerInput.value) {
      stopTyping(s);
      return;
    }
    const now = Date.now();
    if (!s.typingActive || now - s.typingSentAt >= TYPING_REFRESH_MS) {
      s.chat.emit("typing", { conversation_id: s.conversationId, typing: true });
      s.typingActive = true;
      s.typingSentAt = now;
    }
    clearTimeout(s.typingIdleTimer);
    s.typingIdleTimer = setTimeout(() => stopTyping(s), TYPING_IDLE_MS);
  }

  function stopTyping(s) {
    clearTimeout(s.typingIdleTimer);
    if (!s.typingActive) return;
    s.typingActive = false;
    if (s.chat && s.chat.connected && s.conversationId) {
      s.chat.emit("typing", { conversation_id: s.conversationId, typing: false });
    }
  }

  // Read receipts: the newest message of the peer that is on screen (and the tab visible)
  // is acknowledged with message:read; the hub tells the peer.
  const readObserver =
    "IntersectionObserver" in window
      ? new IntersectionObserver(onMessagesVisible, { root: ui.messages, threshold: 0.5 })
      : null;

  function onMessagesVisible(entries) {
    const s = session;
    if (!s) return;
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const seq = Number(entry.target.dataset.seq);
      if (!s.readCandidate || seq > s.readCandidate.seq) {
        s.readCandidate = { seq, id: entry.target.dataset.id };
      }
    }
    sendReadReceipt(s);
  }

  async function sendReadReceipt(s) {
    const candidate = s.readCandidate;
    if (document.visibilityState !== "visible" || !candidate || !s.conversationId) return;
    if (candidate.seq <= s.readSentSeq || !s.chat || !s.chat.connected) return;
    s.readSentSeq = candidate.seq;
    const conversationId = s.conversationId;
    try {
      const ack = await s.chat.timeout(ACK_TIMEOUT_MS).emitWithAck("message:read", {
        conversation_id: conversationId,
        message_id: candidate.id,
      });
      log("message:read ack", ack);
      const conversation = s.conversations.get(conversationId);
      if (ack && ack.ok && conversation) {
        conversation.unread_count = ack.unread_count;
        renderConversations(s);
      }
    } catch (_err) {
      if (s.readSentSeq === candidate.seq) s.readSentSeq = 0; // try again on the next look
    }
  }

  function renderThread(s) {
    const atBottom =
      ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
    if (readObserver) readObserver.disconnect();
    const stored = Array.from(s.messages.values()).sort((a, b) => a.seq - b.seq);
    const nodes = stored.map((message) => messageItem(s, message));
    for (const [clientMsgId, pending] of s.pending) {
      if (pending.peer !== s.peer) continue;
      nodes.push(pendingItem(s, clientMsgId, pending));
    }
    if (nodes.length === 0 && s.peer) {
      nodes.push(el("li", { className: "empty", text: "No messages yet. Say hello!" }));
    }
    ui.messages.replaceChildren(...nodes);
    if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
    if (readObserver) {
      for (const node of ui.messages.querySelectorAll('[data-from="peer"]')) readObserver.observe(node);
    } else if (stored.length) {
      const newest = stored.filter((m) => m.sender_id !== s.user).pop();
      if (newest) {
        s.readCandidate = { seq: newest.seq, id: String(newest.id) };
        sendReadReceipt(s);
      }
    }
  }

  function messageItem(s, message) {
    const mine = message.sender_id === s.user;
    const read = mine && s.peerReadId !== null && idAtMost(message.id, s.peerReadId);
    const deleted = Boolean(message.deleted_at);
    return el(
      "li",
      {
        className: (mine ? "message mine" : "message theirs") + (deleted ? " deleted" : ""),
        dataset: {
          testid: "message",
          from: mine ? "me" : "peer",
          id: String(message.id),
          seq: String(message.seq),
        },
      },
      el("div", {
        className: "bubble",
        text: deleted ? "Message deleted" : String(message.body),
        dataset: { testid: "message-body" },
      }),
      el(
        "div",
        { className: "meta" },
        el("time", { text: formatTime(message.created_at) }),
        message.edited_at && !deleted
          ? el("span", { text: "edited", dataset: { testid: "message-edited" } })
          : null,
        mine && !deleted
          ? el(
              "span",
              { className: "actions" },
              el("button", {
                type: "button",
                className: "link",
                text: "Edit",
                dataset: { testid: "message-edit" },
                onclick: () => startEditing(s, message),
              }),
              el("button", {
                type: "button",
                className: "link",
                text: "Delete",
                dataset: { testid: "message-delete" },
                onclick: () => changeMessage(s, "message:delete", { message_id: String(message.id) }),
              })
            )
          : null,
        mine
          ? el("span", {
              className: read ? "status read" : "status",
              text: read ? "✓✓ Read" : "✓ Sent",
              dataset: { testid: "message-status" },
            })
          : null
      )
    );
  }

  function pendingItem(s, clientMsgId, pending) {
    const failed = pending.status === "failed";
    return el(
      "li",
      { className: "message mine pending", dataset: { testid: "message", from: "me" } },
      el("div", { className: "bubble", text: pending.body }),
      el(
        "div",
        { className: "meta" },
        el("span", {
          className: failed ? "status failed" : "status",
          text: failed ? "Not sent: " + pending.error : "Sending…",
          dataset: { testid: "message-status" },
        }),
        failed
          ? el("button", {
              type: "button",
              className: "link",
              text: "Retry",
              dataset: { testid: "retry" },
              // The same client_msg_id: if the first try did arrive, the hub returns it.
              onclick: () => sendMessage(s, pending.body, clientMsgId),
            })
          : null
      )
    );
  }

  // ---------------------------------------------------------------------------------------
  // Wiring

  if (ui.mintForm) {
    const params = new URLSearchParams(window.location.search);
    for (const name of ["tenant", "user"]) {
      if (params.get(name)) ui.mintForm.elements[name].value = params.get(name);
    }
    ui.mintForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError("");
      const form = ui.mintForm.elements;
      try {
        const response = await fetch("/playground/token", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ tenant_id: form.tenant.value, user_id: form.user.value }),
        });
        const data = await response.json().catch(() => null);
        if (!response.ok) {
          throw new Error((data && data.error && data.error.message) || response.statusText);
        }
        sessionStorage.removeItem(PEER_KEY);
        await start(data.token);
      } catch (err) {
        showError("Minting failed: " + err.message);
      }
    });
  }

  ui.tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.tokenInput.value.trim();
    if (!token) {
      showError("Paste a token first.");
      return;
    }
    sessionStorage.removeItem(PEER_KEY);
    start(token);
  });

  ui.disconnect.addEventListener("click", () => {
    stop();
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(PEER_KEY);
    ui.tokenInput.value = "";
    showError("");
  });

  ui.markAll.addEventListener("click", () => session && markRead(session, { all: true }));
  ui.markAllSeen.addEventListener(
    "click",
    () => session && inboxAction(session, "mark-as-seen", { all: true })
  );

  ui.peerForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (session) openPeer(session, ui.peerInput.value);
  });

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const s = session;
    const body = ui.composerInput.value;
    if (!s || !s.peer || !body.trim()) return;
    ui.composerInput.value = "";
    stopTyping(s);
    if (s.editingId) {
      const messageId = s.editingId;
      endEditing();
      changeMessage(s, "message:edit", { message_id: messageId, body });
      return;
    }
    sendMessage(s, body, newClientMsgId());
  });
  ui.editCancel.addEventListener("click", () => {
    endEditing();
    ui.composerInput.value = "";
  });
  ui.composerInput.addEventListener("input", () => session && onComposerInput(session));
  ui.composerInput.addEventListener("blur", () => session && stopTyping(session));

  document.addEventListener("visibilitychange", () => {
    if (session && document.visibilityState === "visible") sendReadReceipt(session);
  });

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved);
})();
