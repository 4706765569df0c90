"""Every REST route, declared once (:class:`api.declarations.Operation`): the router, the
public paths and the OpenAPI document are made from :data:`ROUTES`. Trailing slashes are
optional everywhere."""

from __future__ import annotations

from aiohttp import web

from api import (
    asyncapi,
    broadcasts,
    chat,
    devices,
    emails,
    events,
    health,
    legacy_ws,
    notifications,
    openapi,
    preferences,
    presence,
    tenant_settings,
    unsubscribe,
    users,
    webhooks,
)
from api.declarations import API_ROUTES, PUBLIC_PATHS, Operation, Param, Reply
from hub import responses as out
from hub import schemas
from hub.intake.envelope import MAX_EVENT_BYTES, EventEnvelope
from hub.services.chat import ChatLimits
from hub.services.common import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from hub.services.inbox import Action

# -- parameters -------------------------------------------------------------------------------

LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
    f"Page size, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}); values outside the range "
    "are clamped to it, a non-integer is 400",
    example=20,
)
CURSOR = Param(
    "cursor",
    "query",
    {"type": "string"},
    "Opaque cursor from a previous page's `next_cursor`; anything else is 400 (`invalid_cursor`)",
)
UNREAD = Param(
    "unread",
    "query",
    {"type": "boolean", "default": False},
    "`true` (or `1`): only unread notifications; `false` (or `0`) or absent: all",
    example=True,
)
SEEN = Param(
    "seen",
    "query",
    {"type": "boolean"},
    "`false` (or `0`): only unseen notifications; `true` or absent: all",
    example=False,
)
ARCHIVED = Param(
    "archived",
    "query",
    {"type": "boolean", "default": False},
    "`true` (or `1`): only archived notifications; `false` or absent: only those not archived",
    example=True,
)
NOTIFICATION_ID = Param(
    "notification_id",
    "path",
    {"type": "string", "minLength": 1},
    "Notification id; one that is not the caller's, or does not exist, changes nothing",
    required=True,
    example="1042",
)
EVENT_ID = Param(
    "event_id",
    "path",
    {"type": "string", "minLength": 1, "maxLength": 200},
    "The event's `event_id` (or the one a scheduled `POST /api/notifications/` answered)",
    required=True,
    example="deal-981-won",
)
CATEGORY = Param(
    "category", "query", {"type": "string"}, "Only notifications of this category", example="deals"
)
CONVERSATION_ID = Param(
    "conversation_id",
    "path",
    {"type": "string", "minLength": 1},
    "Conversation id; one that is not the caller's, or does not exist, is 404",
    required=True,
    example="77",
)
DEVICE_ID = Param(
    "device_id",
    "path",
    {"type": "string", "minLength": 1},
    "Device id, as returned by `POST /api/devices/`; another user's is 404",
    required=True,
    example="6c1f0e2a9b8d4c3e8f7a6b5c4d3e2f1a",
)
NOTIFICATION_ID = Param(
    "notification_id",
    "path",
    {"type": "string", "minLength": 1},
    "Notification id",
    required=True,
    example="1042",
)
WEBHOOK_ID = Param(
    "webhook_id",
    "path",
    {"type": "string", "minLength": 1},
    "Webhook id, as returned by `POST /api/webhooks/`; another tenant's is 404",
    required=True,
    example="0b4f5e6a7c8d9e0f1a2b3c4d5e6f7a8b",
)
AFTER_SEQ = Param(
    "after_seq",
    "query",
    {"type": "integer", "minimum": 0},
    "Only the messages with a larger `seq`, oldest first (a client catching up); "
    "`next_cursor` then continues in that order. Not a non-negative integer: 400",
    example=41,
)
MESSAGE_ID = Param(
    "message_id",
    "path",
    {"type": "string", "minLength": 1},
    "Message id, in that conversation; one the caller cannot see is 404",
    required=True,
    example="5001",
)
USER_ID = Param(
    "user_id",
    "path",
    {"type": "string", "minLength": 1, "maxLength": 128},
    "A user of the caller's tenant (the same id in another tenant is another user); 1 to 128 "
    "characters, none a control character, else 400",
    required=True,
    example="u-42",
)
USER_IDS = Param(
    "user_ids",
    "query",
    {"type": "string", "minLength": 1},
    "Comma-separated user ids of the caller's tenant, 1 to 100",
    required=True,
    example="u-42,u-43",
)
EMAIL_ID = Param(
    "email_id",
    "path",
    {"type": "string", "minLength": 1},
    "Email id, as returned by `POST /api/emails/send/`",
    required=True,
    example="3f2b9c0e5d7a4e8f9a1b2c3d4e5f6a7b",
)
UNSUBSCRIBE_TOKEN = Param(
    "token",
    "query",
    {"type": "string", "minLength": 1},
    "The signed token of the email's `List-Unsubscribe` link; altered, forged or signed with "
    "a rotated secret is 400",
    required=True,
)
LEGACY_PARAMS = (
    Param(
        "tenant_id",
        "path",
        {"type": "string"},
        "Must be the token's `tenant_id`",
        required=True,
        example="acme",
    ),
    Param("user_id", "path", {"type": "string"}, "Must be the token's `sub`", True, example="u-42"),
    Param("token", "query", {"type": "string"}, "The JWT (this old protocol has no header)", True),
    Param(
        "last_seq",
        "query",
        {"type": "integer", "minimum": 0},
        "Replay every stored notification with a larger `seq` first",
    ),
)

# -- the operations ---------------------------------------------------------------------------

SERVICE_NOTE = "Requires a token with the `service` role."
INBOX_ACTIONS = (
    (
        Action.SEEN,
        "markNotificationsSeen",
        "Mark notifications as seen",
        '`{"all": true}`: every unseen one.',
    ),
    (
        Action.UNREAD,
        "markNotificationsUnread",
        "Mark notifications as unread",
        '`{"all": true}`: every read one.',
    ),
    (
        Action.ARCHIVE,
        "archiveNotifications",
        "Archive notifications",
        "Archived ones leave lists (see `archived=true`) and counts. "
        '`{"all": true}`: every read one.',
    ),
    (
        Action.UNARCHIVE,
        "unarchiveNotifications",
        "Unarchive notifications",
        '`{"all": true}`: every archived one.',
    ),
)
CHAT_BODY_MAX = ChatLimits().body_max_chars

ROUTES: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/api/notifications/",
        "listNotifications",
        "List the caller's notifications",
        "notifications",
        "user",
        {200: Reply("A page of notifications, newest first", out.NotificationPage)},
        description="Keyset-paginated, newest first; follow `next_cursor` for older pages.",
        params=(LIMIT, CURSOR, UNREAD, SEEN, ARCHIVED, CATEGORY),
        errors=(400, 401, 503),
        handler=notifications.list_notifications,
    ),
    Operation(
        "POST",
        "/api/notifications/",
        "createNotifications",
        "Create a notification for each recipient",
        "notifications",
        "service",
        {
            201: Reply(
                "Created (or, for a repeated idempotency key, the first request's reply; "
                "then `Idempotent-Replayed: true` is set)",
                out.CreatedNotifications,
                headers=("Idempotent-Replayed",),
            ),
            202: Reply(
                "Scheduled: `send_at` is in the future (for a repeated idempotency key, the "
                "first request's schedule, with `Idempotent-Replayed: true`)",
                out.ScheduledNotifications,
                headers=("Idempotent-Replayed",),
            ),
        },
        description="Stores one notification per distinct recipient of the caller's tenant "
        "who wants `in_app` for its category (see `GET /api/preferences/`) and emits "
        "`notification:new` to each one's sockets; the others are listed in `suppressed`. "
        "With a future `send_at`, the request is stored in the schedule and applied then "
        "(preferences are read then; nothing is visible, emitted or pushed before): 202 "
        "with the `event_id` that cancels it (`POST /api/events/{event_id}/cancel/`). "
        + SERVICE_NOTE,
        body=schemas.CreateNotificationsIn,
        errors=(400, 401, 403, 413, 503),
        handler=notifications.create_notifications,
    ),
    Operation(
        "GET",
        "/api/notifications/unread-count/",
        "getUnreadCount",
        "Count the caller's unread and unseen notifications",
        "notifications",
        "user",
        {200: Reply("The unread and unseen counts", out.UnreadCount)},
        errors=(401, 503),
        handler=notifications.unread_count,
    ),
    Operation(
        "POST",
        "/api/notifications/mark-as-read/",
        "markNotificationsRead",
        "Mark notifications as read",
        "notifications",
        "user",
        {200: Reply("How many changed, and the new unread count", out.MarkReadResult)},
        description="Ids that are not the caller's are ignored, never revealed. Every "
        "connection of the caller receives `notification:read`.",
        body=schemas.MarkReadIn,
        body_examples={
            "some": {"summary": "Some notifications", "value": {"ids": ["1042", "1043"]}},
            "all": {"summary": "Every unread notification", "value": {"all": True}},
        },
        errors=(400, 401, 413, 503),
        handler=notifications.mark_as_read,
    ),
    *(
        Operation(
            "POST",
            f"/api/notifications/{action.value}/",
            operation_id,
            summary,
            "notifications",
            "user",
            {200: Reply("How many changed, and the new counts", out.InboxChangeResult)},
            description=f"{detail} Ids that are not the caller's (or expired) are ignored, "
            "never revealed. Every connection of the caller receives `notification:updated`.",
            body=schemas.SelectionIn,
            errors=(400, 401, 413, 503),
            handler=notifications.inbox_action(action),
        )
        for action, operation_id, summary, detail in INBOX_ACTIONS
    ),
    Operation(
        "DELETE",
        "/api/notifications/{notification_id}/",
        "deleteNotification",
        "Delete a notification for good",
        "notifications",
        "user",
        {200: Reply("Whether it changed, and the new counts", out.InboxChangeResult)},
        description="`updated` is 0 for an id that is not the caller's or does not exist. "
        "Every connection of the caller receives `notification:updated` with "
        '`"changes": {"deleted": true}`.',
        params=(NOTIFICATION_ID,),
        errors=(401, 503),
        handler=notifications.delete_notification,
    ),
    Operation(
        "GET",
        "/api/tenant/settings/",
        "getTenantSettings",
        "Read the tenant's settings",
        "tenants",
        "service",
        {200: Reply("The tenant's retention periods", out.TenantSettings)},
        description="The caller's tenant. " + SERVICE_NOTE,
        errors=(401, 403, 503),
        handler=tenant_settings.get_settings,
    ),
    Operation(
        "PUT",
        "/api/tenant/settings/",
        "putTenantSettings",
        "Replace the tenant's settings",
        "tenants",
        "service",
        {200: Reply("The settings now in force", out.TenantSettings)},
        description="A field left out (or null) goes back to the default. `retention_days` "
        "may be at most the hub's `NOTIFYHUB_RETENTION_DAYS` (else 400). The purge applies "
        "them on its next pass. " + SERVICE_NOTE,
        body=schemas.TenantSettingsIn,
        errors=(400, 401, 403, 413, 503),
        handler=tenant_settings.put_settings,
    ),
    Operation(
        "POST",
        "/api/broadcasts/",
        "createBroadcast",
        "Announce to every connected socket of the tenant",
        "notifications",
        "service",
        {202: Reply("Emitted as `broadcast` on every node; not stored", out.BroadcastAccepted)},
        description="Emitted at once to every connected `/notifications` socket of the "
        "caller's tenant. " + SERVICE_NOTE,
        body=schemas.BroadcastIn,
        errors=(400, 401, 403, 413, 503),
        handler=broadcasts.create_broadcast,
    ),
    Operation(
        "POST",
        "/api/messages/send/",
        "sendMessage",
        "Send a chat message to a user of the tenant",
        "chat",
        "user",
        {
            201: Reply("Stored and emitted as `message:new` to both participants", out.SentMessage),
            200: Reply(
                "A repeated `client_msg_id` of the caller: the first message; nothing is "
                "stored or emitted",
                out.SentMessage,
            ),
        },
        description=f"`body` is 1 to {CHAT_BODY_MAX:,} characters by default (configurable); "
        "longer is 413. Sending to yourself is 400. A per-user rate limit answers 429 with "
        "`Retry-After`.",
        body=schemas.RestSendMessageIn,
        errors=(400, 401, 413, 429, 503),
        handler=chat.send_message,
    ),
    Operation(
        "GET",
        "/api/conversations/",
        "listConversations",
        "List the caller's conversations",
        "chat",
        "user",
        {200: Reply("Most recently active first", out.ConversationPage)},
        params=(LIMIT, CURSOR),
        errors=(400, 401, 503),
        handler=chat.list_conversations,
    ),
    Operation(
        "GET",
        "/api/conversations/{conversation_id}/messages/",
        "listMessages",
        "List a conversation's messages",
        "chat",
        "user",
        {200: Reply("Newest first; with `after_seq`, oldest first", out.MessagePage)},
        description="Deleted messages stay in the history as tombstones (`deleted_at` set, "
        "`body` empty); edited ones carry `edited_at`.",
        params=(CONVERSATION_ID, LIMIT, CURSOR, AFTER_SEQ),
        errors=(400, 401, 404, 503),
        handler=chat.list_messages,
    ),
    Operation(
        "PATCH",
        "/api/conversations/{conversation_id}/messages/{message_id}/",
        "editMessage",
        "Edit one of the caller's messages",
        "chat",
        "user",
        {200: Reply("Stored (with `edited_at`) and emitted as `message:updated`", out.SentMessage)},
        description="Only its sender may edit a message (403 `not_sender`), a deleted one is "
        "409 `deleted`, and past `NOTIFYHUB_CHAT_EDIT_WINDOW_SECONDS` after sending (when set) "
        "403 `edit_window_closed`. Both participants receive `message:updated` on every device.",
        params=(CONVERSATION_ID, MESSAGE_ID),
        body=schemas.RestEditMessageIn,
        errors=(400, 401, 403, 404, 409, 413, 503),
        handler=chat.edit_message,
    ),
    Operation(
        "DELETE",
        "/api/conversations/{conversation_id}/messages/{message_id}/",
        "deleteMessage",
        "Delete one of the caller's messages",
        "chat",
        "user",
        {200: Reply("The tombstone: `deleted_at` set, `body` empty", out.SentMessage)},
        description="Only its sender may delete a message (403 `not_sender`); it stays in the "
        "history as a tombstone and both participants receive `message:updated`. Deleting a "
        "tombstone again answers it and emits nothing.",
        params=(CONVERSATION_ID, MESSAGE_ID),
        errors=(401, 403, 404, 503),
        handler=chat.delete_message,
    ),
    Operation(
        "POST",
        "/api/conversations/{conversation_id}/read/",
        "markConversationRead",
        "Send a read receipt",
        "chat",
        "user",
        {200: Reply("The caller's unread count in the conversation", out.ReadReceiptResult)},
        description="Read up to and including `message_id`; the read pointer only moves "
        "forward. Both participants receive `message:read` when it moves.",
        params=(CONVERSATION_ID,),
        body=schemas.RestReadIn,
        errors=(400, 401, 404, 413, 503),
        handler=chat.mark_read,
    ),
    Operation(
        "GET",
        "/api/presence/",
        "getPresence",
        "Whether users are connected to chat",
        "chat",
        "user",
        {200: Reply("Each user's status, in the order asked", out.PresencePage)},
        description="Within the caller's tenant: `online` while any `/chat` socket of the user "
        "is connected on any node, `offline` after `NOTIFYHUB_PRESENCE_GRACE_SECONDS` without "
        "one (a node that died counts after its records expire). Users never seen are "
        "`offline` with `last_seen_at` null.",
        params=(USER_IDS,),
        errors=(400, 401, 503),
        handler=presence.get_presence,
    ),
    Operation(
        "POST",
        "/api/events/",
        "publishEvent",
        "Publish a CRM event (the Kafka envelope over HTTP)",
        "events",
        "service",
        {202: Reply("Applied (or, for a known event id, recognised)", out.EventAccepted)},
        description="Applied once per `(tenant_id, event_id)`. `tenant_id` must be the "
        f"token's tenant (else 403). At most {MAX_EVENT_BYTES // 1024} KiB (413). Unknown "
        "fields are ignored. With a future `send_at` (ISO 8601 with an offset) it is stored "
        "and applied then (cancel it with `POST /api/events/{event_id}/cancel/`); with "
        '`digest` `{"key", "window_seconds"}` (1 to 604800) it is gathered with the '
        "recipient's other events of that key into one notification, updated in place, and "
        "one email when the window closes. " + SERVICE_NOTE,
        body=EventEnvelope,
        body_examples={
            "deal_won": {
                "summary": "A notification and an email for one recipient",
                "value": {
                    "event_id": "deal-981-won",
                    "tenant_id": "acme",
                    "type": "deal.won",
                    "occurred_at": "2025-03-01T09:30:00Z",
                    "recipients": [{"user_id": "u-42", "email": "ann@example.com"}],
                    "notification": {
                        "title": "Deal won",
                        "body": "ACME Corp signed the contract.",
                        "category": "deals",
                        "data": {"deal_id": 981},
                        "link": "/deals/981",
                    },
                    "email": {"template_key": "deal_won", "context": {"Deal": "ACME Corp"}},
                },
            }
        },
        errors=(400, 401, 403, 413, 503),
        handler=events.take_event,
    ),
    Operation(
        "POST",
        "/api/events/{event_id}/cancel/",
        "cancelEvent",
        "Cancel a scheduled event (or scheduled notifications) before it is sent",
        "events",
        "service",
        {200: Reply("Cancelled: it will not be sent (again: still cancelled)", out.Cancelled)},
        description="For an event of the caller's tenant with a future `send_at`, or the "
        "`event_id` a scheduled `POST /api/notifications/` answered. 409 `already_sent` "
        "once it was applied (or for an event applied at once), 404 for an unknown id. "
        + SERVICE_NOTE,
        params=(EVENT_ID,),
        errors=(401, 403, 404, 409, 503),
        handler=events.cancel_event,
    ),
    Operation(
        "POST",
        "/api/emails/send/",
        "sendEmail",
        "Queue a templated email",
        "emails",
        "service",
        {202: Reply("Queued; poll `GET /api/emails/{email_id}/` for its status", out.EmailQueued)},
        description="The arguments of the `send_notification_email` task. " + SERVICE_NOTE,
        body=schemas.SendEmailIn,
        errors=(400, 401, 403, 413, 503),
        handler=emails.send_email,
    ),
    Operation(
        "GET",
        "/api/emails/{email_id}/",
        "getEmail",
        "Read an email's delivery status",
        "emails",
        "service",
        {200: Reply("Status and history", out.EmailStatus)},
        description="404 for an email of any other tenant. " + SERVICE_NOTE,
        params=(EMAIL_ID,),
        errors=(401, 403, 404, 503),
        handler=emails.get_email,
    ),
    Operation(
        "POST",
        "/api/devices/",
        "registerDevice",
        "Register a device of the caller for push",
        "push",
        "user",
        {
            201: Reply("Registered", out.Device),
            200: Reply(
                "Registered before: the same id (the device now belongs to the caller)", out.Device
            ),
        },
        description="A browser's Web Push subscription (`PushSubscription.toJSON()`) or an FCM "
        "/ APNs device token. Pushes go to the caller's devices when a notification is made "
        "while the caller has no socket connected (`NOTIFYHUB_PUSH_POLICY`).",
        body=schemas.RegisterDeviceIn,
        errors=(400, 401, 413, 503),
        handler=devices.register_device,
    ),
    Operation(
        "GET",
        "/api/devices/",
        "listDevices",
        "List the caller's push devices",
        "push",
        "user",
        {200: Reply("The caller's devices, oldest first", out.DeviceList)},
        errors=(401, 503),
        handler=devices.list_devices,
    ),
    Operation(
        "DELETE",
        "/api/devices/{device_id}/",
        "deleteDevice",
        "Remove one of the caller's push devices",
        "push",
        "user",
        {204: Reply("Removed")},
        params=(DEVICE_ID,),
        errors=(401, 404, 503),
        handler=devices.delete_device,
    ),
    Operation(
        "GET",
        "/api/push/vapid-public-key/",
        "getVapidPublicKey",
        "The VAPID public key browsers subscribe with",
        "push",
        "user",
        {200: Reply("The key", out.VapidPublicKey)},
        description="404 `not_configured` when the hub has no `NOTIFYHUB_VAPID_PRIVATE_KEY`.",
        errors=(401, 404),
        handler=devices.get_vapid_public_key,
    ),
    Operation(
        "GET",
        "/api/notifications/{notification_id}/deliveries/",
        "listNotificationDeliveries",
        "The emails and pushes of a notification, with their status",
        "push",
        "user",
        {200: Reply("Its deliveries, oldest first", out.DeliveryList)},
        description="The owner's token, or a `service` token of the tenant; 404 otherwise.",
        params=(NOTIFICATION_ID,),
        errors=(401, 404, 503),
        handler=devices.notification_deliveries,
    ),
    Operation(
        "POST",
        "/api/webhooks/",
        "createWebhook",
        "Register a webhook endpoint of the tenant",
        "webhooks",
        "service",
        {201: Reply("Registered; the secret is shown only here", out.WebhookCreated)},
        description="Deliveries follow Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature: v1,<base64 HMAC-SHA256>`; body `{type, timestamp, data}`). "
        "URLs that resolve to loopback, link-local or private addresses are 400 unless "
        "`NOTIFYHUB_WEBHOOKS_ALLOW_PRIVATE=true`. " + SERVICE_NOTE,
        body=schemas.CreateWebhookIn,
        errors=(400, 401, 403, 413, 503),
        handler=webhooks.create_webhook,
    ),
    Operation(
        "GET",
        "/api/webhooks/",
        "listWebhooks",
        "List the tenant's webhook endpoints",
        "webhooks",
        "service",
        {200: Reply("The endpoints, oldest first", out.WebhookList)},
        description=SERVICE_NOTE,
        errors=(401, 403, 503),
        handler=webhooks.list_webhooks,
    ),
    Operation(
        "DELETE",
        "/api/webhooks/{webhook_id}/",
        "deleteWebhook",
        "Remove a webhook endpoint (what it had still to receive is cancelled)",
        "webhooks",
        "service",
        {204: Reply("Removed")},
        description=SERVICE_NOTE,
        params=(WEBHOOK_ID,),
        errors=(401, 403, 404, 503),
        handler=webhooks.delete_webhook,
    ),
    Operation(
        "GET",
        "/api/webhooks/{webhook_id}/deliveries/",
        "listWebhookDeliveries",
        "An endpoint's deliveries with every attempt",
        "webhooks",
        "service",
        {200: Reply("Deliveries, newest first", out.WebhookDeliveryPage)},
        description=SERVICE_NOTE,
        params=(WEBHOOK_ID, LIMIT, CURSOR),
        errors=(400, 401, 403, 404, 503),
        handler=webhooks.list_deliveries,
    ),
    Operation(
        "GET",
        "/api/users/{user_id}/export/",
        "exportUser",
        "Everything the hub holds about one user of the tenant (GDPR article 15)",
        "data rights",
        "service",
        {
            200: Reply(
                "One JSON document, streamed (chunked transfer encoding): the user's "
                "preferences, push devices (the endpoint or token they registered, never "
                "the Web Push keys), conversations, notifications with their pushes, every "
                "message of their conversations, and the emails made for them. A user the "
                "hub knows nothing of gets empty lists. A connection that ends before the "
                "chunked terminator is a failed export, not a shorter one",
                out.UserExport,
            )
        },
        description="Rows are read in pages and written as they come, so the document's size "
        "is bounded by nothing but the data (docs/data-rights.md). " + SERVICE_NOTE,
        params=(USER_ID,),
        errors=(400, 401, 403, 404, 503),
        handler=users.export_user,
    ),
    Operation(
        "DELETE",
        "/api/users/{user_id}/",
        "eraseUser",
        "Erase one user's data in the tenant (GDPR article 17)",
        "data rights",
        "service",
        {200: Reply("What was erased, per kind", out.UserErased)},
        description="In one transaction: the user's notifications (with their pushes), push "
        "devices and preferences are deleted; the messages they sent keep their place in the "
        "peer's history as tombstones (`deleted_at`, empty `body`); the emails made for them "
        "lose the address, subject and template fields (those not sent yet end `failed`); "
        "webhook deliveries about them lose their payload (those not sent yet are "
        "cancelled). An audit record (who asked, when, the counts) is kept, and every live "
        "connection of the user, on every node, is closed. Erasing again is harmless: all "
        "counts 0, and one more audit record. " + SERVICE_NOTE,
        params=(USER_ID,),
        errors=(400, 401, 403, 404, 503),
        handler=users.erase_user,
    ),
    Operation(
        "GET",
        "/api/preferences/",
        "getPreferences",
        "Read the caller's effective notification preferences",
        "preferences",
        "user",
        {200: Reply("Resolved with the tenant's defaults and locks", out.Preferences)},
        description="Channel switches resolved, categories that the caller or the tenant "
        "decided anything about (a channel the tenant locked shows on, whatever the caller "
        "stored), quiet hours.",
        errors=(401, 503),
        handler=preferences.get_preferences,
    ),
    Operation(
        "PATCH",
        "/api/preferences/",
        "updatePreferences",
        "Change the caller's notification preferences",
        "preferences",
        "user",
        {200: Reply("The new effective preferences", out.Preferences)},
        description="Merges any part of the preferences object: a channel set to `null` "
        "forgets the caller's switch, a category set to `null` removes the caller's override "
        "of it, `quiet_hours: null` removes them. Every `/notifications` socket of the caller "
        "receives `preferences:updated` with the new effective preferences. Channels are "
        "`in_app`, `email`, `push`; category names 1-64 characters.",
        body=schemas.PreferencesPatchIn,
        errors=(400, 401, 413, 503),
        handler=preferences.patch_preferences,
    ),
    Operation(
        "GET",
        "/api/tenant/preferences/",
        "getTenantPreferences",
        "Read the tenant's preference defaults",
        "preferences",
        "service",
        {200: Reply("The defaults of the token's tenant", out.TenantPreferences)},
        description=SERVICE_NOTE,
        errors=(401, 403, 503),
        handler=preferences.get_tenant_preferences,
    ),
    Operation(
        "PUT",
        "/api/tenant/preferences/",
        "replaceTenantPreferences",
        "Replace the tenant's preference defaults and locks",
        "preferences",
        "service",
        {200: Reply("The stored defaults", out.TenantPreferences)},
        description="Defaults apply where a user decided nothing; a category's `locked` "
        "channels are on for every user of the tenant, whatever they set. " + SERVICE_NOTE,
        body=schemas.TenantPreferencesIn,
        errors=(400, 401, 403, 413, 503),
        handler=preferences.put_tenant_preferences,
    ),
    Operation(
        "GET",
        "/api/unsubscribe/",
        "unsubscribePage",
        "The confirmation page of an email's unsubscribe link",
        "preferences",
        "public",
        {
            200: Reply(
                "HTML with a button that does the POST",
                content_type="text/html",
                schema={"type": "string"},
            )
        },
        description="Changes nothing (mail scanners fetch links): the page's button posts "
        "to the same URL.",
        params=(UNSUBSCRIBE_TOKEN,),
        errors=(400, 503),
        handler=unsubscribe.confirm_page,
    ),
    Operation(
        "POST",
        "/api/unsubscribe/",
        "unsubscribe",
        "One-click unsubscribe (RFC 8058): turn the link's category email off",
        "preferences",
        "public",
        {
            200: Reply(
                "Unsubscribed (a page instead when the request accepts `text/html`)",
                out.Unsubscribed,
            )
        },
        description="No bearer token: the signed token names the tenant, the user and the "
        "category. The body (`List-Unsubscribe=One-Click`, form-encoded) is not needed. "
        "Every `/notifications` socket of the user receives `preferences:updated`.",
        params=(UNSUBSCRIBE_TOKEN,),
        errors=(400, 503),
        handler=unsubscribe.unsubscribe_now,
    ),
    Operation(
        "GET",
        "/healthz",
        "healthz",
        "Liveness: the process answers",
        "operations",
        "public",
        {200: Reply("Alive", out.Health)},
        handler=health.healthz,
    ),
    Operation(
        "GET",
        "/readyz",
        "readyz",
        "Readiness: database (migrated to this code's schema), Redis and the Kafka consumer, "
        "as configured",
        "operations",
        "public",
        {
            200: Reply("Every configured dependency answers", out.Ready),
            503: Reply("Some dependency does not answer", out.NotReady),
        },
        handler=health.readyz,
    ),
    Operation(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics of this process",
        "operations",
        "public",
        {200: Reply("Prometheus text exposition", content_type="text/plain", schema={})},
        handler=health.metrics,
    ),
    Operation(
        "GET",
        "/api/openapi.json",
        "getOpenApi",
        "This OpenAPI 3.1 document",
        "operations",
        "public",
        {200: Reply("The document", schema={"type": "object"})},
        handler=openapi.openapi_json,
    ),
    Operation(
        "GET",
        "/api/asyncapi.json",
        "getAsyncApi",
        "The AsyncAPI 3.0 document of the Socket.IO namespaces and the Kafka topics",
        "operations",
        "public",
        {200: Reply("The document", schema={"type": "object"})},
        handler=asyncapi.asyncapi_json,
    ),
    Operation(
        "GET",
        "/api/docs",
        "getDocs",
        "A page that renders this document",
        "operations",
        "public",
        {200: Reply("HTML", content_type="text/html", schema={"type": "string"})},
        handler=openapi.docs_page,
    ),
    Operation(
        "GET",
        "/ws/notifications/{tenant_id}/{user_id}/",
        "legacyNotificationsWebSocket",
        "Legacy plain WebSocket (WebSocket upgrade, not a REST call)",
        "realtime",
        "public",
        {101: Reply("Switching to the WebSocket protocol", content_type="", schema=None)},
        description="For clients of the Django Channels service this hub replaces. Receives "
        'the `/notifications` events as JSON text frames `{"type": "notification:new" | '
        '"notification:read", "data": {...}}`. The token goes in the query string; a path '
        "that does not match its claims is closed with 4403, a bad or expired token with "
        "4401. New clients use Socket.IO (`/socket.io/`, namespaces `/notifications` and "
        "`/chat`).",
        params=LEGACY_PARAMS,
        handler=legacy_ws.legacy_notifications,
    ),
)


def setup_routes(app: web.Application, routes: tuple[Operation, ...] = ROUTES) -> None:
    for op in routes:
        app.router.add_route(op.method, op.path, op.handler)
        if op.path.endswith("/") and op.path != "/":
            app.router.add_route(op.method, op.path.rstrip("/"), op.handler)
    app[API_ROUTES] = routes
    app[PUBLIC_PATHS] = frozenset(op.path for op in routes if op.role == "public")
