"""Users' data rights (GDPR articles 15 and 17): the export of everything the hub holds about
one user of a tenant, and its erasure (docs/data-rights.md).

The export is a stream of byte chunks forming one JSON document: rows are read in keyset
pages, each page in its own short session, and each row is encoded on its own, so a user with
100,000 notifications costs one page of memory, and no pool connection is held while the
client reads. The erasure is one transaction that takes the user's counter lock first, like
every change of an inbox (docs/architecture.md, "Inbox counts"): a notification created at
the same time is either erased with the rest or made whole after it, never half.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, case, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import (
    Conversation,
    ConversationMember,
    DigestWindow,
    Email,
    EmailEvent,
    Message,
    Notification,
    NotificationCounter,
    PushDelivery,
    PushDevice,
    ScheduledEvent,
    UserErasure,
    UserPreference,
    WebhookDelivery,
)
from hub.delivery.bus import DisconnectBus
from hub.errors import Unavailable
from hub.services import inbox
from hub.services.chat import MESSAGES, serialize_message
from hub.services.common import iso_utc
from hub.services.leases import PENDING
from hub.services.notifications import serialize
from hub.services.scheduled import CANCELLED as SCHEDULE_CANCELLED
from hub.services.scheduled import PENDING as SCHEDULE_PENDING
from hub.services.scheduled import SENT as SCHEDULE_SENT
from hub.services.webhooks import CANCELLED

log = logging.getLogger(__name__)
# A separate logger, so that operators can route the audit lines on their own.
audit_log = logging.getLogger("hub.audit")

# Rows per keyset page: the export's memory is about this many rows (~10 KB each while a page
# is decoded and encoded, measured with tracemalloc), whatever the user's volume.
EXPORT_PAGE_ROWS = 250
# What a pending email of an erased user ends with (it has no address left to go to).
ERASED_ERROR = "erased at the user's request"
# What remains of a webhook delivery's payload that carried the user's data.
ERASED_PAYLOAD: dict[str, Any] = {"erased": True}
# The webhook event types whose ``data.user_id`` names the user the event is about.
USER_EVENTS = ("notification.created", "notification.read", "push.failed")
EMAIL_EVENTS = ("email.sent", "email.failed")

Row = Mapping[Any, Any]
Query = Select[*tuple[Any, ...]]
Page = Callable[[Row | None], Query]


def _keyset(query: Query, column: Any, key: str) -> Page:
    """Pages of ``query`` in ``column`` order: the next one starts after the last row's
    ``key`` (the column's value)."""

    def page(after: Row | None) -> Query:
        rest = query if after is None else query.where(column > after[key])
        return rest.order_by(column)

    return page


def _owned(model: Any, tenant_id: str, user_id: str, key: str) -> Page:
    """Pages of the rows of ``model``'s table that belong to the user, in ``key`` order."""
    rows = select(model.__table__).where(model.tenant_id == tenant_id, model.user_id == user_id)
    return _keyset(rows, getattr(model, key), key)


def _iso(moment: datetime | None) -> str | None:
    return iso_utc(moment) if moment is not None else None


def _device(row: Row) -> dict[str, Any]:
    """What the user registered that identifies the device: the Web Push endpoint or the
    FCM/APNs token. Not the Web Push encryption keys (the ``auth`` secret of the browser's
    subscription): they are needed only to encrypt pushes, and would let whoever holds the
    export push to that browser."""
    target = "endpoint" if row["kind"] == "webpush" else "token"
    return {
        "id": row["id"],
        "kind": row["kind"],
        target: row["token"],
        "created_at": iso_utc(row["created_at"]),
    }


def _conversation(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["conversation_id"]),
        "peer_id": row["peer_id"],
        "created_at": iso_utc(row["created_at"]),
        "last_activity_at": iso_utc(row["last_activity_at"]),
        "last_read_seq": row["last_read_seq"],
        "unread_count": row["unread_count"],
    }


def _email(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "to_email": row["to_email"],
        "subject": row["subject"],
        "template_key": row["template_key"],
        "context": row["context"] or {},
        "category": row["category"],
        "status": row["status"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "created_at": iso_utc(row["created_at"]),
        "sent_at": _iso(row["sent_at"]),
        "notification_id": None if row["notification_id"] is None else str(row["notification_id"]),
    }


def _digest_window(row: Row) -> dict[str, Any]:
    return {
        "key": row["key"],
        "status": row["status"],
        "opened_at": iso_utc(row["opened_at"]),
        "closes_at": iso_utc(row["closes_at"]),
        "notification_id": None if row["notification_id"] is None else str(row["notification_id"]),
        "count": row["count"],
        "events": row["events"] or [],
        "email": row["email"],
    }


def _scheduled_for(row: Row, user_id: str) -> dict[str, Any] | None:
    """A pending event that names the user: what it will send them. Not the other
    recipients (their data is theirs)."""
    document = row["document"] or {}
    mine = [
        recipient
        for recipient in document.get("recipients") or []
        if isinstance(recipient, dict) and recipient.get("user_id") == user_id
    ]
    if not mine:
        return None
    return {
        "event_id": row["event_id"],
        "type": document.get("type"),
        "send_at": iso_utc(row["due_at"]),
        "recipient": mine[0],
        "notification": document.get("notification"),
        "email": document.get("email"),
        "digest": document.get("digest"),
    }


def _push(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "notification_id": str(row["notification_id"]),
        "device_id": row["device_id"],
        "kind": row["kind"],
        "status": row["status"],
        "attempts": row["attempts"],
        "last_error": row["last_error"],
        "created_at": iso_utc(row["created_at"]),
        "updated_at": iso_utc(row["updated_at"]),
    }


def _preferences(row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "channels": row["channels"] or {},
        "categories": row["categories"] or {},
        "quiet_hours": row["quiet_hours"],
        "updated_at": iso_utc(row["updated_at"]),
    }


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class DataRightsService:
    """Export and erasure of one user's data in one tenant. Built once per process."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: DisconnectBus,
        page_rows: int = EXPORT_PAGE_ROWS,
    ) -> None:
        self.sessions = sessions
        self.bus = bus
        self.page_rows = page_rows

    # -- export (GDPR art. 15) --------------------------------------------------------

    async def export(self, *, tenant_id: str, user_id: str) -> AsyncGenerator[bytes]:
        """The export document in chunks (docs/data-rights.md gives its shape). The first
        chunk comes after the first reads, so a database that does not answer fails the
        request before anything is sent."""
        async with self.sessions() as session:
            stored = (
                (
                    await session.execute(
                        select(UserPreference.__table__).where(
                            UserPreference.tenant_id == tenant_id,
                            UserPreference.user_id == user_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
        head = {
            "user_id": user_id,
            "tenant_id": tenant_id,
            "exported_at": iso_utc(datetime.now(UTC)),
            "preferences": _preferences(stored),
        }
        # The object without its closing brace: the arrays follow.
        yield orjson.dumps(head)[:-1]

        yield b',"devices":['
        async for chunk in self._rows(self._devices(tenant_id, user_id), ("id",), _device):
            yield chunk
        yield b'],"conversations":['
        conversations: list[int] = []

        def conversation(row: Row) -> dict[str, Any]:
            conversations.append(int(row["conversation_id"]))
            return _conversation(row)

        async for chunk in self._rows(
            self._conversations(tenant_id, user_id), ("conversation_id",), conversation
        ):
            yield chunk
        yield b'],"notifications":['
        async for chunk in self._rows(self._notifications(tenant_id, user_id), ("seq",), serialize):
            yield chunk
        yield b'],"push_deliveries":['
        async for chunk in self._rows(self._pushes(tenant_id, user_id), ("id",), _push):
            yield chunk
        yield b'],"messages":['
        # One array over every conversation: the first chunk of each conversation after one
        # that had messages needs the separator (later chunks carry their own).
        written = False
        for conversation_id in conversations:
            pages = self._rows(
                self._messages(tenant_id, conversation_id), ("seq",), serialize_message
            )
            async for chunk in pages:
                yield b"," + chunk if written and not chunk.startswith(b",") else chunk
                written = True
        yield b'],"emails":['
        async for chunk in self._rows(self._emails(tenant_id, user_id), ("id",), _email):
            yield chunk
        yield b'],"digest_windows":['
        async for chunk in self._rows(
            self._digest_windows(tenant_id, user_id), ("key",), _digest_window
        ):
            yield chunk
        yield b'],"scheduled_events":['
        async for chunk in self._rows(
            self._scheduled(tenant_id), ("id",), lambda row: _scheduled_for(row, user_id)
        ):
            yield chunk
        yield b"]}"

    async def _rows(
        self,
        page: Page,
        key: tuple[str, ...],
        encode: Callable[[Row], Mapping[str, Any] | None],
    ) -> AsyncIterator[bytes]:
        """The comma-separated JSON of every row (but those ``encode`` leaves out: None), one
        chunk per keyset page, each page read in a session of its own (released before the
        chunk is written to the client)."""
        after: Row | None = None
        written = False
        while True:
            async with self.sessions() as session:
                rows = (await session.execute(page(after).limit(self.page_rows))).mappings().all()
            if not rows:
                return
            # (Empty only when ``encode`` left every row out: a JSON object is never b"".)
            chunk = b",".join(
                orjson.dumps(item) for row in rows if (item := encode(row)) is not None
            )
            if chunk:
                yield b"," + chunk if written else chunk
                written = True
            if len(rows) < self.page_rows:
                return
            last = rows[-1]
            after = {name: last[name] for name in key}

    @staticmethod
    def _devices(tenant_id: str, user_id: str) -> Page:
        return _owned(PushDevice, tenant_id, user_id, "id")

    @staticmethod
    def _digest_windows(tenant_id: str, user_id: str) -> Page:
        return _owned(DigestWindow, tenant_id, user_id, "key")

    @staticmethod
    def _scheduled(tenant_id: str) -> Page:
        # The tenant's pending events, read by id: those naming the user are picked out as
        # they come (a recipient is inside the event's document).
        pending = select(
            ScheduledEvent.id,
            ScheduledEvent.event_id,
            ScheduledEvent.due_at,
            ScheduledEvent.document,
        ).where(ScheduledEvent.tenant_id == tenant_id, ScheduledEvent.status == SCHEDULE_PENDING)
        return _keyset(pending, ScheduledEvent.id, "id")

    @staticmethod
    def _conversations(tenant_id: str, user_id: str) -> Page:
        members = (
            select(
                ConversationMember.conversation_id,
                ConversationMember.peer_id,
                ConversationMember.last_read_seq,
                ConversationMember.unread_count,
                ConversationMember.last_activity_at,
                Conversation.created_at,
            )
            .join(
                Conversation,
                and_(
                    Conversation.tenant_id == ConversationMember.tenant_id,
                    Conversation.id == ConversationMember.conversation_id,
                ),
            )
            .where(ConversationMember.tenant_id == tenant_id, ConversationMember.user_id == user_id)
        )
        return _keyset(members, ConversationMember.conversation_id, "conversation_id")

    @staticmethod
    def _notifications(tenant_id: str, user_id: str) -> Page:
        # Keyset on (tenant_id, user_id, seq): the unique index's range.
        return _owned(Notification, tenant_id, user_id, "seq")

    @staticmethod
    def _pushes(tenant_id: str, user_id: str) -> Page:
        return _owned(PushDelivery, tenant_id, user_id, "id")

    @staticmethod
    def _messages(tenant_id: str, conversation_id: int) -> Page:
        history = select(MESSAGES).where(
            Message.tenant_id == tenant_id, Message.conversation_id == conversation_id
        )
        return _keyset(history, Message.seq, "seq")

    @staticmethod
    def _emails(tenant_id: str, user_id: str) -> Page:
        return _owned(Email, tenant_id, user_id, "id")

    # -- erasure (GDPR art. 17) -------------------------------------------------------

    async def erase(self, *, tenant_id: str, user_id: str, requested_by: str) -> dict[str, int]:
        """Erase the user's data in one transaction and record the audit row in it; then
        close the user's connections on every node. Returns how many rows of each kind were
        erased (all 0 the second time)."""
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            counts = await _erase_in(session, tenant_id=tenant_id, user_id=user_id, now=now)
            session.add(
                UserErasure(
                    tenant_id=tenant_id,
                    user_id=user_id,
                    requested_by=requested_by,
                    requested_at=now,
                    counts=counts,
                )
            )
        audit_log.info(
            "user erased: tenant=%s user=%s requested_by=%s counts=%s",
            tenant_id,
            user_id,
            requested_by,
            orjson.dumps(counts).decode(),
        )
        try:
            await self.bus.publish_disconnect_user(tenant_id=tenant_id, user_id=user_id)
        except Unavailable:
            # Erased is what counts; the sockets left open see an empty inbox, and end at
            # their token's expiry.
            log.warning("user %s erased, but the bus did not take the disconnect", user_id)
        return counts


async def _erase_in(
    session: AsyncSession, *, tenant_id: str, user_id: str, now: datetime
) -> dict[str, int]:
    # The counter lock first, as every change of the inbox takes it: creates for this user
    # wait for the erasure (then store whole notifications after it) or precede it whole.
    await inbox.lock_counter(session, tenant_id, user_id)
    pushes = await session.execute(
        delete(PushDelivery).where(
            PushDelivery.tenant_id == tenant_id, PushDelivery.user_id == user_id
        )
    )
    notifications = await session.execute(
        delete(Notification).where(
            Notification.tenant_id == tenant_id, Notification.user_id == user_id
        )
    )
    # The counter stays with its last_seq, so that seqs go on increasing (a client's resume
    # point stays valid); nothing is left to count.
    await session.execute(
        update(NotificationCounter)
        .where(NotificationCounter.tenant_id == tenant_id, NotificationCounter.user_id == user_id)
        .values(unread_count=0, unseen_count=0)
    )
    devices = await session.execute(
        delete(PushDevice).where(PushDevice.tenant_id == tenant_id, PushDevice.user_id == user_id)
    )
    preferences = await session.execute(
        delete(UserPreference).where(
            UserPreference.tenant_id == tenant_id, UserPreference.user_id == user_id
        )
    )
    # The messages they sent become tombstones, as a delete by the sender makes them: the
    # peer's history keeps the place (seq, time) without the text.
    their_conversations = select(ConversationMember.conversation_id).where(
        ConversationMember.tenant_id == tenant_id, ConversationMember.user_id == user_id
    )
    messages = await session.execute(
        update(Message)
        .where(
            Message.tenant_id == tenant_id,
            Message.conversation_id.in_(their_conversations),
            Message.sender_id == user_id,
            Message.deleted_at.is_(None),
        )
        .values(body="", deleted_at=now)
        .execution_options(synchronize_session=False)
    )
    their_emails = select(Email.id).where(Email.tenant_id == tenant_id, Email.user_id == user_id)
    pending_email = Email.status.in_(PENDING)
    emails = await session.execute(
        update(Email)
        .where(Email.tenant_id == tenant_id, Email.user_id == user_id, Email.to_email != "")
        .values(
            to_email="",
            subject=None,
            context={},
            # SMTP replies often quote the address.
            last_error=case((pending_email, ERASED_ERROR), else_=None),
            status=case((pending_email, "failed"), else_=Email.status),
            lease_until=None,
            next_attempt_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(EmailEvent)
        .where(
            EmailEvent.tenant_id == tenant_id,
            EmailEvent.email_id.in_(their_emails),
            EmailEvent.error.is_not(None),
        )
        .values(error=None)
        .execution_options(synchronize_session=False)
    )
    # Webhook deliveries whose payload carries the user's data: the payload is erased, and
    # those not sent yet are cancelled (docs/data-rights.md says why).
    data = WebhookDelivery.payload
    about_user = or_(
        and_(
            WebhookDelivery.type.in_(USER_EVENTS),
            data[("data", "user_id")].as_string() == user_id,
        ),
        and_(
            WebhookDelivery.type == "message.created",
            data[("data", "sender_id")].as_string() == user_id,
        ),
        and_(
            WebhookDelivery.type.in_(EMAIL_EVENTS),
            data[("data", "id")].as_string().in_(their_emails),
        ),
    )
    hooks = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.tenant_id == tenant_id, about_user)
        .values(
            payload=ERASED_PAYLOAD,
            status=case(
                (WebhookDelivery.status.in_(PENDING), CANCELLED), else_=WebhookDelivery.status
            ),
            lease_until=None,
            next_attempt_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    # The user's digest windows (the notification each updates is deleted above; an open
    # window's email, with the address, would be sent when it closes).
    digests = await session.execute(
        delete(DigestWindow).where(
            DigestWindow.tenant_id == tenant_id, DigestWindow.user_id == user_id
        )
    )
    scheduled = await _erase_from_scheduled(session, tenant_id=tenant_id, user_id=user_id)
    return {
        "notifications": _rowcount(notifications),
        "push_deliveries": _rowcount(pushes),
        "devices": _rowcount(devices),
        "preferences": _rowcount(preferences),
        "messages": _rowcount(messages),
        "emails": _rowcount(emails),
        "webhook_deliveries": _rowcount(hooks),
        "digest_windows": _rowcount(digests),
        "scheduled_events": scheduled,
    }


async def _erase_from_scheduled(session: AsyncSession, *, tenant_id: str, user_id: str) -> int:
    """Events scheduled for later that name the user among their recipients (with their
    address, maybe): the user leaves the recipients; a pending event left with none is
    cancelled. Sent ones too: what they made is erased above, but their stored envelope
    still holds the user's entry. Read under the rows' locks, as the scheduler and a cancel
    take them."""
    rows = (
        await session.execute(
            select(ScheduledEvent.id, ScheduledEvent.status, ScheduledEvent.document)
            .where(
                ScheduledEvent.tenant_id == tenant_id,
                ScheduledEvent.status.in_((SCHEDULE_PENDING, SCHEDULE_SENT)),
            )
            .with_for_update()
        )
    ).all()
    changed = 0
    for row_id, status, document in rows:
        recipients = document.get("recipients") or []
        kept = [r for r in recipients if not (isinstance(r, dict) and r.get("user_id") == user_id)]
        if len(kept) == len(recipients):
            continue
        changed += 1
        values: dict[str, Any] = {"document": {**document, "recipients": kept}}
        if not kept and status == SCHEDULE_PENDING:
            values["status"] = SCHEDULE_CANCELLED
        await session.execute(
            update(ScheduledEvent).where(ScheduledEvent.id == row_id).values(**values)
        )
    return changed
