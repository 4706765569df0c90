"""Tables of the hub. Every table is tenant-scoped and every index starts with ``tenant_id``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from db.base import USER_ID_LENGTH, Base, BigId, JsonDocument, TenantScoped

# Rows the unseen counter counts (see NotificationCounter).
UNSEEN_SQL = "seen_at IS NULL AND archived_at IS NULL"


class Notification(TenantScoped, Base):
    """One in-app notification of one user. ``seq`` counts that user's notifications 1, 2, 3..."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("tenant_id", "user_id", "seq"),
        # Unread counts and "unread only" pages read this small partial index.
        Index(
            "ix_notifications_unread",
            "tenant_id",
            "user_id",
            "seq",
            postgresql_where=text("read_at IS NULL"),
            sqlite_where=text("read_at IS NULL"),
        ),
        # "Unseen only" pages; the unseen badge itself is a counter (NotificationCounter).
        Index(
            "ix_notifications_unseen",
            "tenant_id",
            "user_id",
            "seq",
            postgresql_where=text(UNSEEN_SQL),
            sqlite_where=text(UNSEEN_SQL),
        ),
        # The archive tab: only archived rows, newest first.
        Index(
            "ix_notifications_archived",
            "tenant_id",
            "user_id",
            "seq",
            postgresql_where=text("archived_at IS NOT NULL"),
            sqlite_where=text("archived_at IS NOT NULL"),
        ),
        # Counts subtract a user's expired-but-not-yet-purged rows: a range of this index.
        Index(
            "ix_notifications_expiring",
            "tenant_id",
            "user_id",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
            sqlite_where=text("expires_at IS NOT NULL"),
        ),
        # The purge's two cross-tenant questions, "what has expired" and "what is older than
        # the retention": like ix_emails_due, not led by tenant_id because they span tenants.
        Index(
            "ix_notifications_expires_at",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
            sqlite_where=text("expires_at IS NOT NULL"),
        ),
        Index("ix_notifications_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    seq: Mapped[int] = mapped_column(BigInteger)
    category: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    link: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    read_at: Mapped[datetime | None] = mapped_column()
    seen_at: Mapped[datetime | None] = mapped_column()
    archived_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()


class NotificationCounter(TenantScoped, Base):
    """Per-user ``seq`` allocator and exact unread and unseen counts, updated in the
    transaction that changes the rows they count.

    ``unread_count`` counts the user's rows with ``read_at IS NULL AND archived_at IS NULL``,
    ``unseen_count`` those with ``seen_at IS NULL AND archived_at IS NULL``, expired or not:
    the badge subtracts the few expired rows the purge has not deleted yet
    (docs/architecture.md, "Inbox counts").

    Allocating ``seq`` by incrementing this row serialises concurrent creators for one user
    on its row lock, which is what keeps ``seq`` free of duplicates and holes.
    """

    __tablename__ = "notification_counters"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    unread_count: Mapped[int] = mapped_column(BigInteger, default=0)
    unseen_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class TenantSettings(TenantScoped, Base):
    """A tenant's own settings (``PUT /api/tenant/settings/``); no row: the hub's defaults."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    retention_days: Mapped[int | None] = mapped_column()
    chat_retention_days: Mapped[int | None] = mapped_column()
    chat_edit_window_seconds: Mapped[int | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()


class NotificationRequest(TenantScoped, Base):
    """A service's create request remembered by its idempotency key: the ids it produced."""

    __tablename__ = "notification_requests"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    notification_ids: Mapped[list[int]] = mapped_column(JsonDocument, default=list)
    # Recipients left out by their preferences, so that a repeated key answers them too
    # (null for requests stored before preferences existed).
    suppressed_user_ids: Mapped[list[str] | None] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Conversation(TenantScoped, Base):
    """A 1-on-1 conversation; ``user_a < user_b`` so that a pair has exactly one row."""

    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("tenant_id", "user_a", "user_b"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_a: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    user_b: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    # Allocates message seqs: incremented under this row's lock, so no duplicate, no hole.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column()


class ConversationMember(TenantScoped, Base):
    """One participant's view of a conversation: read pointer, unread count, activity."""

    __tablename__ = "conversation_members"
    __table_args__ = (
        # "My conversations, most recently active first" reads this index only.
        Index(
            "ix_conversation_members_activity",
            "tenant_id",
            "user_id",
            "last_activity_at",
            "conversation_id",
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), primary_key=True)
    peer_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    last_read_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_read_message_id: Mapped[int | None] = mapped_column(BigInteger)
    unread_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_activity_at: Mapped[datetime] = mapped_column()


class Message(TenantScoped, Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("tenant_id", "conversation_id", "seq"),
        # A retried send with the same client_msg_id finds the first message.
        Index(
            "uq_messages_client_msg_id",
            "tenant_id",
            "sender_id",
            "client_msg_id",
            unique=True,
            postgresql_where=text("client_msg_id IS NOT NULL"),
            sqlite_where=text("client_msg_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation_id: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    sender_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    body: Mapped[str] = mapped_column(Text)
    client_msg_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column()
    edited_at: Mapped[datetime | None] = mapped_column()
    deleted_at: Mapped[datetime | None] = mapped_column()  # a tombstone: body emptied


# The email statuses the sweeper may still have to act on (see hub/services/emails.py).
PENDING_EMAIL_SQL = "status IN ('queued', 'sending', 'retrying')"


class Email(TenantScoped, Base):
    """One email to send: its request, its status and what happened to it.

    ``id`` is the Taskiq task id, so a redelivered or repeated task finds its record.
    ``lease_until`` guards a send in progress: another worker leaves a leased email alone;
    the worker holding it renews it while the attempt runs. ``next_attempt_at`` is when the
    sweeper next takes the email if nothing else has: the retry time of a ``retrying``
    email, the lease end of a ``sending`` one (its worker died), a grace period after a
    ``queued`` one was kicked (its task was lost).
    """

    __tablename__ = "emails"
    __table_args__ = (
        Index("ix_emails_tenant_id_created_at", "tenant_id", "created_at"),
        Index(
            "ix_emails_tenant_id_notification_id",
            "tenant_id",
            "notification_id",
            postgresql_where=text("notification_id IS NOT NULL"),
            sqlite_where=text("notification_id IS NOT NULL"),
        ),
        # One user's emails (export and erasure, docs/data-rights.md).
        Index("ix_emails_tenant_id_user_id", "tenant_id", "user_id", "id"),
        # The one index not led by tenant_id: the sweeper asks "what is due" across all
        # tenants. Partial, so it holds only the few emails still waiting, never the sent.
        Index(
            "ix_emails_due",
            "next_attempt_at",
            postgresql_where=text(PENDING_EMAIL_SQL),
            sqlite_where=text(PENDING_EMAIL_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    to_email: Mapped[str] = mapped_column(String(320))
    # The recipient and category of an email made for a notification or event (null for a
    # plain POST /api/emails/send/): preferences are checked again before it is sent, and a
    # categorised one carries an unsubscribe link.
    user_id: Mapped[str | None] = mapped_column(String(USER_ID_LENGTH))
    category: Mapped[str | None] = mapped_column(String(64))
    # The notification it goes with (an event's email for a recipient who also got the
    # notification, a digest's email): listed with that notification's deliveries.
    notification_id: Mapped[int | None] = mapped_column(BigInteger)
    subject: Mapped[str | None] = mapped_column(Text)
    template_key: Mapped[str] = mapped_column(String(200))
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    smtp_message_id: Mapped[str | None] = mapped_column(String(998))
    lease_until: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()


class EmailEvent(TenantScoped, Base):
    """The status history of an email (append-only): attempts, retries, the outcome."""

    __tablename__ = "email_events"
    __table_args__ = (Index("ix_email_events_tenant_id_email_id", "tenant_id", "email_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column()


class PushDevice(TenantScoped, Base):
    """A device of a user that receives push: a browser's Web Push subscription (its
    endpoint in ``token``, its keys in ``keys``) or an FCM / APNs device token."""

    __tablename__ = "push_devices"
    __table_args__ = (
        # One device per (tenant, kind, token): registering it again finds the same row.
        UniqueConstraint("tenant_id", "kind", "token_hash"),
        Index("ix_push_devices_tenant_id_user_id", "tenant_id", "user_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))
    token: Mapped[str] = mapped_column(Text)
    # sha256 of ``token``: Web Push endpoints are long URLs, too long for a btree key.
    token_hash: Mapped[str] = mapped_column(String(64))
    keys: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column()


# The push statuses the sweeper may still have to act on (see hub/services/pushes.py).
PENDING_PUSH_SQL = "status IN ('queued', 'sending', 'retrying')"


class LeasedWork:
    """The columns of work a worker does once under a lease (hub/services/leases.py): its
    status, attempts so far, the last error, the lease and when it is next due."""

    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()


class PushDelivery(LeasedWork, TenantScoped, Base):
    """One push of one notification to one device, with its status: written in the
    transaction that stores the notification, sent by a worker under a lease (like
    :class:`Email`), so it is pushed at most once and never lost."""

    __tablename__ = "push_deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "device_id"),
        Index("ix_push_deliveries_tenant_id_notification_id", "tenant_id", "notification_id"),
        # One user's pushes (export and erasure, docs/data-rights.md).
        Index("ix_push_deliveries_tenant_id_user_id", "tenant_id", "user_id", "id"),
        Index(
            "ix_push_deliveries_due",
            "next_attempt_at",
            postgresql_where=text(PENDING_PUSH_SQL),
            sqlite_where=text(PENDING_PUSH_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    device_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    # What the device shows: {"id", "title", "body", "link", "category", "seq"}.
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebhookEndpoint(TenantScoped, Base):
    """A tenant's receiver of hub events: its URL, the event types it wants, its secret."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        Index("ix_webhook_endpoints_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column()


# The webhook statuses the sweeper may still have to act on (see hub/services/webhooks.py).
PENDING_WEBHOOK_SQL = "status IN ('queued', 'sending', 'retrying')"


class WebhookDelivery(LeasedWork, TenantScoped, Base):
    """One event for one endpoint: the durable outbox, written in the transaction of the
    change it reports, sent by the workers under a lease (hub/services/leases.py)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_tenant_id_endpoint_id", "tenant_id", "endpoint_id", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text(PENDING_WEBHOOK_SQL),
            sqlite_where=text(PENDING_WEBHOOK_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(String(32))
    # The Standard Webhooks ``webhook-id``: the same on every attempt, for the receiver's
    # deduplication.
    message_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebhookAttempt(TenantScoped, Base):
    """Every attempt of a delivery: the receiver's status code or the error, and when."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        Index("ix_webhook_attempts_tenant_id_delivery_id", "tenant_id", "delivery_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column()
    status_code: Mapped[int | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column()


class ProcessedEvent(TenantScoped, Base):
    """An event applied once: its ``(tenant_id, event_id)`` makes every later copy a no-op."""

    __tablename__ = "processed_events"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    applied_at: Mapped[datetime] = mapped_column()


class UserPreference(TenantScoped, Base):
    """A user's own preferences (only what the user set; see :mod:`hub.preferences`)."""

    __tablename__ = "user_preferences"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), primary_key=True)
    channels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    categories: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quiet_hours: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    updated_at: Mapped[datetime] = mapped_column()


class TenantPreference(TenantScoped, Base):
    """A tenant's preference defaults; a category may lock channels on."""

    __tablename__ = "tenant_preferences"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    categories: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quiet_hours: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    updated_at: Mapped[datetime] = mapped_column()


# The scheduled events the scheduler may still have to apply.
PENDING_SCHEDULED_SQL = "status = 'pending'"


class ScheduledEvent(TenantScoped, Base):
    """An event (or a REST create) to apply at ``due_at``: stored durably when it arrives,
    applied once by whichever scheduler claims it (in the transaction that marks it
    ``sent``), or ``cancelled`` before then."""

    __tablename__ = "scheduled_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id"),
        # The schedulers' one cross-tenant question, "what is due": like ix_emails_due.
        Index(
            "ix_scheduled_events_due",
            "due_at",
            postgresql_where=text(PENDING_SCHEDULED_SQL),
            sqlite_where=text(PENDING_SCHEDULED_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime] = mapped_column()
    # pending -> sent | cancelled
    status: Mapped[str] = mapped_column(String(16))
    # The event envelope as it arrived (send_at included), applied as is when due.
    document: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()


# The digest windows the scheduler may still have to close.
OPEN_DIGEST_SQL = "status = 'open'"


class DigestWindow(TenantScoped, Base):
    """The current (or last) digest window of one key of one user: the events gathered
    while it is open, the in-app notification they update, the email sent when it closes.
    One row per key, locked by every event that joins it and by the closing scheduler."""

    __tablename__ = "digest_windows"
    __table_args__ = (
        Index(
            "ix_digest_windows_due",
            "closes_at",
            postgresql_where=text(OPEN_DIGEST_SQL),
            sqlite_where=text(OPEN_DIGEST_SQL),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    # open -> closed (and open again for the next window)
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime] = mapped_column()
    closes_at: Mapped[datetime] = mapped_column()
    notification_id: Mapped[int | None] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(default=0)
    # The gathered events' notification parts, newest first, at most 50.
    events: Mapped[list[dict[str, Any]]] = mapped_column(JsonDocument, default=list)
    # The email to send when the window closes (the newest event's email part, its
    # recipient's address and category); None: no email.
    email: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    closed_at: Mapped[datetime | None] = mapped_column()


class UserErasure(TenantScoped, Base):
    """The audit of one ``DELETE /api/users/{user_id}/``: who asked, when, how many rows of
    each kind it erased. Written in the erasure's transaction and never erased itself."""

    __tablename__ = "user_erasures"
    __table_args__ = (Index("ix_user_erasures_tenant_id_user_id", "tenant_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    # The ``sub`` of the service token that asked.
    requested_by: Mapped[str] = mapped_column(String(USER_ID_LENGTH))
    requested_at: Mapped[datetime] = mapped_column()
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
