/* The playground's service worker: shows a pushed notification, opens its link on click.
 * The push payload is {"id", "title", "body", "link", "category", "seq"} (docs/protocol.md
 * section 10.3). */
self.addEventListener("push", (event) => {
  const notification = event.data ? event.data.json() : {};
  event.waitUntil(
    self.registration.showNotification(notification.title || "NotifyHub", {
      body: notification.body || "",
      tag: "n" + notification.id, // the same push sent twice replaces, never doubles
      data: notification,
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const link = (event.notification.data || {}).link || "/";
  event.waitUntil(self.clients.openWindow(link));
});
