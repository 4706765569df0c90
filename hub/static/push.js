/* The playground's "Enable push" button: subscribe this browser to Web Push and register the
 * subscription as a device of the connected user (docs/protocol.md section 10.1).
 *
 * Independent of playground.js: it reads the token that page keeps in sessionStorage. The
 * service worker beside it (sw.js) shows what arrives.
 */
(() => {
  "use strict";

  const TOKEN_KEY = "notifyhub.playground.token";
  const button = document.querySelector('[data-testid="push-enable"]');
  const status = document.querySelector('[data-testid="push-status"]');
  if (!button || !status) return;

  const say = (text) => {
    status.textContent = text;
    status.hidden = false;
  };

  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    button.disabled = true;
    button.title = "This browser has no Web Push (or the page is not on https / localhost).";
    return;
  }

  // The VAPID key is base64url; subscribe() takes its bytes.
  function keyBytes(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    const raw = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  async function enable() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      say("Connect first: push is registered for the connected user.");
      return;
    }
    const headers = { Authorization: "Bearer " + token };
    const keyResponse = await fetch("/api/push/vapid-public-key/", { headers });
    if (keyResponse.status === 404) {
      say("Web Push is off on this hub: set NOTIFYHUB_VAPID_PRIVATE_KEY (notifyhub vapid-keys).");
      return;
    }
    if (!keyResponse.ok) {
      say(`Could not read the VAPID key (HTTP ${keyResponse.status}).`);
      return;
    }
    const { public_key: publicKey } = await keyResponse.json();
    const registration = await navigator.serviceWorker.register(button.dataset.worker);
    const subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(publicKey),
    });
    const response = await fetch("/api/devices/", {
      method: "POST",
      headers: { ...headers, "Content-Type": "application/json" },
      body: JSON.stringify({ kind: "webpush", subscription: subscription.toJSON() }),
    });
    if (!response.ok) {
      say(`The hub refused the subscription (HTTP ${response.status}).`);
      return;
    }
    const device = await response.json();
    say(`Push is on for this browser (device ${device.id.slice(0, 8)}): notifications made while you are disconnected arrive here.`);
  }

  button.addEventListener("click", () => {
    button.disabled = true;
    enable()
      .catch((error) => say(`Push could not be enabled: ${error.message || error}`))
      .finally(() => {
        button.disabled = false;
      });
  });
})();
