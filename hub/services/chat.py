"""1-on-1 chat within a tenant: conversations, messages, history, edits, read receipts.

REST and the ``/chat`` namespace call one :class:`ChatService`. Emits happen after commit, to
both participants on every node (every device, the sender's other ones included): new
messages over the delivery bus (ordered per conversation, replayed on reconnect, see
:mod:`hub.delivery.chat`), edits, deletes and read receipts to their user rooms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import Conversation, ConversationMember, Message, TenantSettings
from hub import ids
from hub.delivery.bus import ChatBus
from hub.errors import Forbidden, HubError, InvalidInput, NotFound, TooLarge, Unavailable
from hub.realtime import CHAT_NAMESPACE, Realtime
from hub.records import ConversationRecord, MessageRecord
from hub.services.common import clamp_limit, insert_for, iso_utc
from hub.services.ratelimit import RateLimiter
from hub.services.webhooks import report_in
from hub.settings import Settings

log = logging.getLogger(__name__)
MESSAGES = Message.__table__
NOT_FOUND_MESSAGE = "conversation not found"
MESSAGE_NOT_FOUND = "message not found"
# Cursors of ``after_seq`` pages (oldest first) carry this prefix; newest-first ones none.
AFTER_CURSOR = "a:"


@dataclass(frozen=True, slots=True)
class ChatLimits:
    body_max_chars: int = 4000
    edit_window_seconds: float = 0  # 0: a sender may edit at any time

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatLimits:
        return cls(
            body_max_chars=settings.chat_body_max_chars,
            edit_window_seconds=settings.chat_edit_window_seconds,
        )


@dataclass(frozen=True, slots=True)
class MessageHistory:
    items: list[MessageRecord]  # newest first; oldest first after a given seq
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ConversationList:
    items: list[ConversationRecord]  # most recently active first
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SendResult:
    message: MessageRecord
    created: bool  # False: a retried client_msg_id; the first message, nothing stored


def serialize_message(row: Mapping[Any, Any]) -> MessageRecord:
    return {
        "id": str(row["id"]),
        "conversation_id": str(row["conversation_id"]),
        "sender_id": row["sender_id"],
        "body": row["body"],
        "client_msg_id": row["client_msg_id"],
        "created_at": iso_utc(row["created_at"]),
        "seq": row["seq"],
        "edited_at": iso_utc(row["edited_at"]) if row["edited_at"] is not None else None,
        "deleted_at": iso_utc(row["deleted_at"]) if row["deleted_at"] is not None else None,
    }


async def replay_page(
    session: AsyncSession, tenant_id: str, conversation_id: str, after_seq: int, limit: int
) -> list[tuple[int, str | None]]:
    """``(seq, encoded message)`` pairs after ``after_seq``, oldest first: live delivery's
    catch-up of one conversation."""
    rows = await session.execute(
        select(MESSAGES)
        .where(
            Message.tenant_id == tenant_id,
            Message.conversation_id == int(conversation_id),
            Message.seq > after_seq,
        )
        .order_by(Message.seq)
        .limit(limit)
    )
    return [(row["seq"], orjson.dumps(serialize_message(row)).decode()) for row in rows.mappings()]


async def latest_seqs(
    session: AsyncSession, conversations: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The latest ``seq`` of each ``(tenant_id, conversation id)``: the lag check's question."""
    if not conversations:
        return {}
    rows = await session.execute(
        select(Conversation.tenant_id, Conversation.id, Conversation.last_seq).where(
            tuple_(Conversation.tenant_id, Conversation.id).in_(
                [(tenant_id, int(conversation_id)) for tenant_id, conversation_id in conversations]
            )
        )
    )
    return {(tenant_id, str(id_)): int(seq) for tenant_id, id_, seq in rows}


async def conversation_seqs(
    session: AsyncSession, users: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, int]]:
    """For each ``(tenant_id, user_id)``, the latest ``seq`` of each of the user's
    conversations: where connecting sockets' streams start (or, below a client's
    ``last_seqs``, what they replay). One statement for every socket connecting at once."""
    if not users:
        return {}
    rows = await session.execute(
        select(
            ConversationMember.tenant_id,
            ConversationMember.user_id,
            ConversationMember.conversation_id,
            Conversation.last_seq,
        )
        .join(
            Conversation,
            and_(
                Conversation.tenant_id == ConversationMember.tenant_id,
                Conversation.id == ConversationMember.conversation_id,
            ),
        )
        .where(tuple_(ConversationMember.tenant_id, ConversationMember.user_id).in_(users))
    )
    found: dict[tuple[str, str], dict[str, int]] = {user: {} for user in users}
    for tenant_id, user_id, conversation_id, seq in rows:
        found[(tenant_id, user_id)][str(conversation_id)] = int(seq)
    return found


def _existing_id(value: object) -> int:
    """An id from the API (a string of digits); anything else cannot exist: 404."""
    parsed = ids.parse_id(value)
    if parsed is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return parsed


def _check_body(body: str, limits: ChatLimits) -> None:
    if not body.strip():
        raise InvalidInput("body must not be empty")
    if len(body) > limits.body_max_chars:
        raise TooLarge(f"body is longer than {limits.body_max_chars} characters")
    if "\x00" in body:
        raise InvalidInput("body must not contain NUL characters")


async def _conversation_with(
    session: AsyncSession, *, tenant_id: str, user_id: str, peer_id: str, now: datetime
) -> int:
    """The pair's conversation, created if missing: exactly one, even when both sides send
    their first message at the same moment (the unique pair + ON CONFLICT settle it)."""
    user_a, user_b = sorted((user_id, peer_id))
    insert = insert_for(session)
    await session.execute(
        insert(Conversation)
        .values(tenant_id=tenant_id, user_a=user_a, user_b=user_b, last_seq=0, created_at=now)
        .on_conflict_do_nothing(index_elements=["tenant_id", "user_a", "user_b"])
    )
    conversation_id = await session.scalar(
        select(Conversation.id).where(
            Conversation.tenant_id == tenant_id,
            Conversation.user_a == user_a,
            Conversation.user_b == user_b,
        )
    )
    if conversation_id is None:  # inserted above or by the racing transaction, never None
        raise RuntimeError("conversation neither inserted nor found")
    await session.execute(
        insert(ConversationMember)
        .values(
            [
                {
                    "tenant_id": tenant_id,
                    "conversation_id": conversation_id,
                    "user_id": member,
                    "peer_id": peer,
                    "last_read_seq": 0,
                    "unread_count": 0,
                    "last_activity_at": now,
                }
                for member, peer in ((user_a, user_b), (user_b, user_a))
            ]
        )
        .on_conflict_do_nothing()
    )
    return int(conversation_id)


async def _peer_of(
    session: AsyncSession, *, tenant_id: str, user_id: str, conversation_id: int
) -> str:
    """The other participant, or 404 when the caller is not in that conversation."""
    peer = await session.scalar(
        select(ConversationMember.peer_id).where(
            ConversationMember.tenant_id == tenant_id,
            ConversationMember.conversation_id == conversation_id,
            ConversationMember.user_id == user_id,
        )
    )
    if peer is None:
        raise NotFound(NOT_FOUND_MESSAGE)
    return str(peer)


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def _own_message(
    session: AsyncSession,
    *,
    tenant_id: str,
    user_id: str,
    message_id: object,
    conversation_id: object,
) -> tuple[Mapping[Any, Any], str]:
    """The caller's message, locked for the change, and the other participant.

    A message the caller cannot see (another conversation, tenant, or none) is 404, so ids
    reveal nothing; the peer's message, which the caller does see, is 403.
    """
    wanted = ids.parse_id(message_id)
    if wanted is None:
        raise NotFound(MESSAGE_NOT_FOUND)
    query = select(MESSAGES).where(Message.tenant_id == tenant_id, Message.id == wanted)
    if conversation_id is not None:
        query = query.where(Message.conversation_id == _existing_id(conversation_id))
    row = (await session.execute(query.with_for_update())).mappings().first()
    if row is None:
        raise NotFound(MESSAGE_NOT_FOUND)
    try:
        peer = await _peer_of(
            session, tenant_id=tenant_id, user_id=user_id, conversation_id=row["conversation_id"]
        )
    except NotFound:
        raise NotFound(MESSAGE_NOT_FOUND) from None
    if row["sender_id"] != user_id:
        raise Forbidden("only its sender may change a message", code="not_sender")
    return row, peer


async def _existing_message(
    session: AsyncSession, *, tenant_id: str, sender_id: str, client_msg_id: str
) -> MessageRecord | None:
    row = (
        (
            await session.execute(
                select(MESSAGES).where(
                    Message.tenant_id == tenant_id,
                    Message.sender_id == sender_id,
                    Message.client_msg_id == client_msg_id,
                )
            )
        )
        .mappings()
        .first()
    )
    return serialize_message(row) if row is not None else None


class ChatService:
    """Conversations, messages, history and read receipts, for REST and the ``/chat``
    namespace alike. Built once per process; emits go to both participants' user rooms on
    every node after the commit."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        realtime: Realtime,
        bus: ChatBus,
        limiter: RateLimiter,
        limits: ChatLimits,
    ) -> None:
        self.sessions = sessions
        self.realtime = realtime
        self.bus = bus
        self.limiter = limiter
        self.limits = limits

    async def peer_of(
        self,
        *,
        tenant_id: str,
        user_id: str,
        conversation_id: object,
    ) -> str:
        """The other participant of the caller's conversation (404 if it is not the caller's)."""
        async with self.sessions() as session:
            return await _peer_of(
                session,
                tenant_id=tenant_id,
                user_id=user_id,
                conversation_id=_existing_id(conversation_id),
            )

    async def send(
        self,
        *,
        tenant_id: str,
        sender_id: str,
        body: str,
        to_user_id: str | None = None,
        conversation_id: object = None,
        client_msg_id: str | None = None,
    ) -> SendResult:
        """Store a message and emit ``message:new`` to both participants after commit."""
        _check_body(body, self.limits)
        if to_user_id is None and conversation_id is None:
            raise InvalidInput("give 'to_user_id' or 'conversation_id'")
        if to_user_id is not None and to_user_id == sender_id:
            raise InvalidInput("you cannot send a message to yourself", code="self_message")
        await self.limiter.take(f"{len(tenant_id)}:{tenant_id}:{sender_id}")
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            if client_msg_id is not None:
                first = await _existing_message(
                    session, tenant_id=tenant_id, sender_id=sender_id, client_msg_id=client_msg_id
                )
                if first is not None:
                    return SendResult(message=first, created=False)
            if to_user_id is not None:
                peer_id = to_user_id
                target = await _conversation_with(
                    session, tenant_id=tenant_id, user_id=sender_id, peer_id=peer_id, now=now
                )
            else:
                target = _existing_id(conversation_id)
                peer_id = await _peer_of(
                    session, tenant_id=tenant_id, user_id=sender_id, conversation_id=target
                )
            # The conversation row lock orders concurrent senders: seq has no duplicate or hole.
            seq = await session.scalar(
                update(Conversation)
                .where(Conversation.tenant_id == tenant_id, Conversation.id == target)
                .values(last_seq=Conversation.last_seq + 1)
                .returning(Conversation.last_seq)
            )
            insert = insert_for(session)
            inserted = (
                (
                    await session.execute(
                        insert(Message)
                        .values(
                            tenant_id=tenant_id,
                            conversation_id=target,
                            seq=seq,
                            sender_id=sender_id,
                            body=body,
                            client_msg_id=client_msg_id,
                            created_at=now,
                        )
                        .on_conflict_do_nothing()
                        .returning(*MESSAGES.c)
                    )
                )
                .mappings()
                .first()
            )
            if inserted is None:
                # The same client_msg_id committed by a concurrent retry while we waited for the
                # lock: undo our seq increment and answer with the first message.
                await session.rollback()
                async with self.sessions() as fresh:
                    first = await _existing_message(
                        fresh,
                        tenant_id=tenant_id,
                        sender_id=sender_id,
                        client_msg_id=client_msg_id or "",
                    )
                if first is None:  # the conflicting row exists: ON CONFLICT found it
                    raise RuntimeError("message conflicted on client_msg_id but is not there")
                return SendResult(message=first, created=False)
            await session.execute(
                update(Conversation)
                .where(Conversation.tenant_id == tenant_id, Conversation.id == target)
                .values(last_message_id=inserted["id"])
            )
            in_conversation = and_(
                ConversationMember.tenant_id == tenant_id,
                ConversationMember.conversation_id == target,
            )
            await session.execute(
                update(ConversationMember).where(in_conversation).values(last_activity_at=now)
            )
            await session.execute(
                update(ConversationMember)
                .where(in_conversation, ConversationMember.user_id == peer_id)
                .values(unread_count=ConversationMember.unread_count + 1)
            )
            message = serialize_message(inserted)
            # Reported with the message, in its transaction (docs/protocol.md 11).
            await report_in(session, "message.created", [(tenant_id, dict(message))])
        # Over the delivery bus, not a room emit: each node orders a conversation's messages
        # by seq for its sockets and replays what a reconnecting one missed.
        try:
            await self.bus.publish_message(
                tenant_id=tenant_id, participants=(sender_id, peer_id), message=message
            )
        except Unavailable:
            # Stored is what counts: every node's lag check finds it within two checks and
            # delivers it to the participants' sockets (a reconnect replays it).
            log.warning("chat message stored but not published live")
        return SendResult(message=message, created=True)

    async def edit(
        self,
        *,
        tenant_id: str,
        user_id: str,
        message_id: object,
        body: str,
        conversation_id: object = None,
    ) -> MessageRecord:
        """Replace the body of the caller's own message (within the edit window, if one is
        set) and emit ``message:updated`` to both participants after commit."""
        _check_body(body, self.limits)
        window = await self._edit_window(tenant_id)

        def edited(row: Mapping[Any, Any], now: datetime) -> dict[str, Any]:
            if row["deleted_at"] is not None:
                raise HubError("a deleted message cannot be edited", code="deleted", status=409)
            if window and (now - _as_utc(row["created_at"])).total_seconds() > window:
                raise Forbidden(
                    f"messages can be edited for {window:g} seconds after sending",
                    code="edit_window_closed",
                )
            return {"body": body, "edited_at": now}

        return await self._change(
            tenant_id=tenant_id,
            user_id=user_id,
            message_id=message_id,
            conversation_id=conversation_id,
            change=edited,
        )

    async def delete(
        self,
        *,
        tenant_id: str,
        user_id: str,
        message_id: object,
        conversation_id: object = None,
    ) -> MessageRecord:
        """Turn the caller's own message into a tombstone (``deleted_at``, empty body) and emit
        ``message:updated``; deleting a tombstone again answers it and emits nothing."""

        def deleted(row: Mapping[Any, Any], now: datetime) -> dict[str, Any] | None:
            return None if row["deleted_at"] is not None else {"body": "", "deleted_at": now}

        return await self._change(
            tenant_id=tenant_id,
            user_id=user_id,
            message_id=message_id,
            conversation_id=conversation_id,
            change=deleted,
        )

    async def _edit_window(self, tenant_id: str) -> float:
        """Seconds a sender of the tenant may edit for (0: no limit): the shorter of the hub's
        NOTIFYHUB_CHAT_EDIT_WINDOW_SECONDS and the tenant's own ``chat_edit_window_seconds``."""
        async with self.sessions() as session:
            own = await session.scalar(
                select(TenantSettings.chat_edit_window_seconds).where(
                    TenantSettings.tenant_id == tenant_id
                )
            )
        limits = [w for w in (self.limits.edit_window_seconds, own) if w]
        return float(min(limits)) if limits else 0.0

    async def _change(
        self,
        *,
        tenant_id: str,
        user_id: str,
        message_id: object,
        conversation_id: object,
        change: Callable[[Mapping[Any, Any], datetime], dict[str, Any] | None],
    ) -> MessageRecord:
        """The one path of edits and deletes: the caller's message, locked; ``change`` says
        what to set (or raises, or None: nothing to do); ``message:updated`` after commit."""
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            row, peer = await _own_message(
                session,
                tenant_id=tenant_id,
                user_id=user_id,
                message_id=message_id,
                conversation_id=conversation_id,
            )
            values = change(row, now)
            if values is None:
                return serialize_message(row)
            changed = (
                (
                    await session.execute(
                        update(Message)
                        .where(Message.tenant_id == tenant_id, Message.id == row["id"])
                        .values(**values)
                        .returning(*MESSAGES.c)
                    )
                )
                .mappings()
                .one()
            )
        message = serialize_message(changed)
        for participant in (user_id, peer):
            await self.realtime.to_user(
                tenant_id=tenant_id,
                user_id=participant,
                event="message:updated",
                data=message,
                namespace=CHAT_NAMESPACE,
            )
        return message

    async def messages(
        self,
        *,
        tenant_id: str,
        user_id: str,
        conversation_id: object,
        limit: int | None = None,
        cursor: str | None = None,
        after_seq: int | None = None,
    ) -> MessageHistory:
        """Newest first, keyset on ``seq``; with ``after_seq``, the messages after it, oldest
        first (a client catching up), whose cursors continue in that direction."""
        size = clamp_limit(limit)
        target = _existing_id(conversation_id)
        query = select(MESSAGES).where(
            Message.tenant_id == tenant_id, Message.conversation_id == target
        )
        if after_seq is not None:
            # A cursor of the other direction must not be taken for this one: the prefix.
            start = (
                ids.cursor_id(ids.decode_cursor(cursor, 1, prefix=AFTER_CURSOR)[0])
                if cursor
                else after_seq
            )
            query = query.where(Message.seq > start).order_by(Message.seq)
        else:
            if cursor:
                (before,) = ids.decode_cursor(cursor, 1)
                query = query.where(Message.seq < ids.cursor_id(before))
            query = query.order_by(Message.seq.desc())
        async with self.sessions() as session:
            await _peer_of(session, tenant_id=tenant_id, user_id=user_id, conversation_id=target)
            rows = (await session.execute(query.limit(size + 1))).mappings().all()
        next_cursor = None
        if len(rows) > size:
            prefix = AFTER_CURSOR if after_seq is not None else ""
            next_cursor = ids.encode_cursor(rows[size - 1]["seq"], prefix=prefix)
        return MessageHistory([serialize_message(row) for row in rows[:size]], next_cursor)

    async def conversations(
        self,
        *,
        tenant_id: str,
        user_id: str,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ConversationList:
        """The caller's conversations, most recently active first (keyset on activity, id)."""
        size = clamp_limit(limit)
        members = ConversationMember
        query = select(
            members.conversation_id,
            members.peer_id,
            members.unread_count,
            members.last_activity_at,
            Conversation.last_message_id,
        ).join(
            Conversation,
            and_(
                Conversation.tenant_id == members.tenant_id,
                Conversation.id == members.conversation_id,
            ),
        )
        query = query.where(members.tenant_id == tenant_id, members.user_id == user_id)
        if cursor:
            activity_text, id_text = ids.decode_cursor(cursor, 2)
            try:
                # Normalised to UTC here, so an offset that pushes it past year 9999 fails now.
                activity = datetime.fromisoformat(activity_text).astimezone(UTC)
            except (ValueError, OverflowError):
                raise ids.bad_cursor() from None
            last_id = ids.cursor_id(id_text)
            query = query.where(
                or_(
                    members.last_activity_at < activity,
                    and_(members.last_activity_at == activity, members.conversation_id < last_id),
                )
            )
        query = query.order_by(
            members.last_activity_at.desc(), members.conversation_id.desc()
        ).limit(size + 1)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
            page = rows[:size]
            message_ids = [row.last_message_id for row in page if row.last_message_id is not None]
            last_messages: dict[int, MessageRecord] = {}
            if message_ids:
                found = await session.execute(
                    select(MESSAGES).where(
                        Message.tenant_id == tenant_id, Message.id.in_(message_ids)
                    )
                )
                last_messages = {row["id"]: serialize_message(row) for row in found.mappings()}
        items = [
            ConversationRecord(
                id=str(row.conversation_id),
                participants=sorted((user_id, row.peer_id)),
                last_message=last_messages.get(row.last_message_id),
                unread_count=int(row.unread_count),
            )
            for row in page
        ]
        next_cursor = None
        if len(rows) > size:
            last = page[-1]
            moment = last.last_activity_at
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            next_cursor = ids.encode_cursor(moment.isoformat(), last.conversation_id)
        return ConversationList(items, next_cursor)

    async def mark_read(
        self,
        *,
        tenant_id: str,
        user_id: str,
        conversation_id: object,
        message_id: object,
    ) -> int:
        """Read receipt up to and including ``message_id``; the pointer only moves forward.

        Returns the caller's exact unread count in that conversation (messages of the peer after
        the pointer), recomputed under the conversation's lock so concurrent sends keep it exact.
        """
        target = _existing_id(conversation_id)
        wanted = _existing_id(message_id)
        now = datetime.now(UTC)
        async with self.sessions() as session, session.begin():
            peer_id = await _peer_of(
                session, tenant_id=tenant_id, user_id=user_id, conversation_id=target
            )
            # Same lock as send_message: reads and sends of one conversation take turns.
            await session.execute(
                select(Conversation.id)
                .where(Conversation.tenant_id == tenant_id, Conversation.id == target)
                .with_for_update()
            )
            seq = await session.scalar(
                select(Message.seq).where(
                    Message.tenant_id == tenant_id,
                    Message.conversation_id == target,
                    Message.id == wanted,
                )
            )
            if seq is None:
                raise NotFound("message not found")
            member = and_(
                ConversationMember.tenant_id == tenant_id,
                ConversationMember.conversation_id == target,
                ConversationMember.user_id == user_id,
            )
            pointer = await session.scalar(select(ConversationMember.last_read_seq).where(member))
            moved = seq > (pointer or 0)
            new_pointer = seq if moved else int(pointer or 0)
            unread = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.tenant_id == tenant_id,
                    Message.conversation_id == target,
                    Message.seq > new_pointer,
                    Message.sender_id != user_id,
                )
            )
            values: dict[str, Any] = {"unread_count": unread}
            if moved:
                values.update(last_read_seq=seq, last_read_message_id=wanted)
            await session.execute(update(ConversationMember).where(member).values(**values))
        if moved:
            receipt = {
                "conversation_id": str(target),
                "user_id": user_id,
                "message_id": str(wanted),
                "read_at": iso_utc(now),
            }
            for participant in (user_id, peer_id):
                await self.realtime.to_user(
                    tenant_id=tenant_id,
                    user_id=participant,
                    event="message:read",
                    data=receipt,
                    namespace=CHAT_NAMESPACE,
                )
        return int(unread or 0)
