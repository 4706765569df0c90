"""The event envelope CRM modules publish (docs/protocol.md "Event intake"), and its decoding.

Unknown fields are ignored, so producers may add fields (and a later envelope ``version``
may add parts) without breaking consumers that do not know them yet.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
import pydantic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from hub.errors import HubError
from hub.rules import NewNotification, NotificationLimits, check_expiry, check_limits
from hub.schemas import (
    EXPIRES_AT,
    ID_PATTERN,
    TEXT_PATTERN,
    TTL_SECONDS,
    CreateNotificationsIn,
    StoredData,
    TtlSeconds,
)

SUPPORTED_VERSION = 1
MAX_EVENT_BYTES = 256 * 1024

Text = Annotated[str, StringConstraints(min_length=1)]


class BadEvent(Exception):
    """An event that can never be applied; ``str(err)`` is the reason for the dead letter."""


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Recipient(Lenient):
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN)]
    email: Annotated[str, StringConstraints(min_length=3, max_length=320)] | None = None

    @field_validator("email")
    @classmethod
    def _plausible_address(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value or any(c in value for c in "\r\n ,;<>")):
            raise ValueError("not a single email address")
        return value


class NotificationPart(Lenient):
    title: str
    body: str = ""
    category: Annotated[str, StringConstraints(max_length=64)] | None = None
    data: dict[str, Any] | None = None
    link: str | None = None
    expires_at: datetime | None = EXPIRES_AT
    ttl_seconds: TtlSeconds | None = TTL_SECONDS

    def as_new(self) -> NewNotification:
        return NewNotification(
            title=self.title,
            body=self.body,
            category=self.category,
            data=self.data,
            link=self.link,
            expires_at=self.expires_at,
            ttl_seconds=self.ttl_seconds,
        )


class EmailPart(Lenient):
    """The email to send each recipient that has an address (same rules as REST)."""

    template_key: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN)
    ]
    subject: Annotated[str, StringConstraints(max_length=998, pattern=TEXT_PATTERN)] | None = None
    context: StoredData = Field(default_factory=dict)


# A digest window lasts from one second to seven days.
DIGEST_MAX_WINDOW_SECONDS = 7 * 24 * 3600


class DigestPart(Lenient):
    """Gather this event with the recipient's others of the same ``key`` for
    ``window_seconds`` from the first one: one in-app notification updated in place, one
    email when the window closes."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN)]
    window_seconds: int = Field(ge=1, le=DIGEST_MAX_WINDOW_SECONDS)


class EventEnvelope(Lenient):
    version: int = SUPPORTED_VERSION
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN)]
    tenant_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=ID_PATTERN)]
    occurred_at: datetime | None = None
    recipients: list[Recipient] = Field(min_length=1)
    notification: NotificationPart | None = None
    email: EmailPart | None = None
    # Not before then (ISO 8601 with an offset); absent or past: now.
    send_at: datetime | None = None
    digest: DigestPart | None = None

    @field_validator("send_at")
    @classmethod
    def _with_offset(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("send_at needs a time zone offset (e.g. 2026-12-01T10:00:00Z)")
        return value

    def due_later(self, now: datetime) -> bool:
        """Whether this event waits in the schedule rather than being applied now."""
        return self.send_at is not None and self.send_at > now

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenant_id, self.event_id)

    def unique_recipients(self) -> list[Recipient]:
        seen: set[str] = set()
        unique = []
        for recipient in self.recipients:
            if recipient.user_id not in seen:
                seen.add(recipient.user_id)
                unique.append(recipient)
        return unique


def validate_envelope(document: object, limits: NotificationLimits) -> EventEnvelope:
    """A decoded JSON document as an envelope, or :class:`BadEvent` saying why not."""
    if not isinstance(document, dict):
        raise BadEvent("event must be a JSON object")
    try:
        envelope = EventEnvelope.model_validate(document)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'event'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise BadEvent(f"invalid event: {problems}"[:1000]) from None
    if (
        envelope.version > SUPPORTED_VERSION
        and envelope.notification is None
        and envelope.email is None
    ):
        raise BadEvent(f"envelope version {envelope.version} has nothing this hub can apply")
    if envelope.notification is not None:
        try:
            content = envelope.notification.as_new()
            check_limits(content, len(envelope.unique_recipients()), limits)
            # Against when it happened, not now: an event that waited in a queue past its
            # expiry is still applied once (stored expired, never shown), not dead-lettered.
            check_expiry(content, not_before=envelope.occurred_at)
        except HubError as exc:
            raise BadEvent(f"invalid notification: {exc.message}") from None
    return envelope


def decode_event(raw: bytes | None, limits: NotificationLimits) -> EventEnvelope:
    """Bytes from a queue as an envelope, or :class:`BadEvent`."""
    if raw is None:
        raise BadEvent("empty message")
    if len(raw) > MAX_EVENT_BYTES:
        raise BadEvent(f"event larger than {MAX_EVENT_BYTES} bytes")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(f"not JSON: {exc}"[:500]) from None
    return validate_envelope(document, limits)


class KafkaDeadLetterHeaders(BaseModel):
    """The headers of a Kafka dead letter, UTF-8 strings set by the Kafka intake (the original
    record's headers are not copied)."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(description="Why the event cannot be applied (a BadEvent reason)")
    source_topic: str = Field(alias="source-topic", description="The topic it came from")
    source_partition: str = Field(
        alias="source-partition", pattern=r"^[0-9]+$", description="Its partition, in decimal"
    )
    source_offset: str = Field(
        alias="source-offset", pattern=r"^[0-9]+$", description="Its offset, in decimal"
    )


# Event ids of scheduled REST creates with an idempotency key: the same key, the same id.
_SCHEDULED_ID_NAMESPACE = uuid.UUID("0b6f2f7e-5c1a-4d8e-9f3b-7a2c4e6d8b10")


def scheduled_create(
    tenant_id: str, request: CreateNotificationsIn, limits: NotificationLimits
) -> EventEnvelope:
    """``POST /api/notifications/`` with a future ``send_at``: the event it becomes, stored by
    the same applier as ``POST /api/events/`` and applied by the same scheduler. The same
    checks (and answers) as a create applied now, before anything is stored; then
    :class:`BadEvent` for what only an event refuses."""
    notification = request.notification()
    check_limits(notification, len(set(request.user_ids)), limits)
    check_expiry(notification, not_before=request.send_at)
    key = request.idempotency_key
    event_id = (
        uuid.uuid5(_SCHEDULED_ID_NAMESPACE, f"{tenant_id}\x00{key}").hex
        if key is not None
        else uuid.uuid4().hex
    )
    document = {
        "event_id": event_id,
        "tenant_id": tenant_id,
        "type": "notification.scheduled",
        "recipients": [{"user_id": user_id} for user_id in request.user_ids],
        "send_at": request.send_at,
        "notification": request.model_dump(
            include={"title", "body", "category", "data", "link", "expires_at", "ttl_seconds"},
            exclude_none=True,
        ),
    }
    return validate_envelope(document, limits)
