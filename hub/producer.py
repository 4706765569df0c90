"""Publishing CRM events to the hub over Kafka: build an envelope, check it, send it.

For CRM modules (and the ``notifyhub publish`` command). The envelope is the one of
docs/protocol.md "Event intake"; :func:`make_event` builds it and checks it with the hub's own
rules, so an event that would be dead-lettered by the hub fails here, in the producer, with
a :class:`ValueError` that says what is wrong.

Copy-paste example (``pip install aiokafka orjson`` and this package)::

    import asyncio

    from hub.producer import make_event, publish_events

    event = make_event(
        tenant_id="acme",
        type="deal.won",
        recipients=["alice", {"user_id": "bob", "email": "bob@acme.example"}],
        notification={
            "title": "Deal won: ACME renewal",
            "body": "Alice closed the renewal (EUR 12,000).",
            "category": "deals",
            "data": {"deal_id": 42},
            "link": "/deals/42",
        },
        email={"template_key": "deal_won", "context": {"Deal Name": "ACME renewal"}},
        event_id="deal-42-won",  # stable per business event: a retry is then a no-op
    )
    asyncio.run(publish_events("kafka:9092", [event]))

In a long-running service keep one producer and await each send::

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers="kafka:9092", acks="all")
    await producer.start()
    try:
        await publish_event(producer, event)  # returns once the broker has it
    finally:
        await producer.stop()

Delivery notes:

- The hub applies each ``(tenant_id, event_id)`` once, however often it arrives, so
  re-sending after an error or a timeout is always safe. Give business events a stable
  ``event_id`` (``"deal-42-won"``) to make your own retries idempotent too; the default
  (a random uuid4) only protects re-sends of the very same dict.
- The Kafka key is ``"{tenant_id}:{event_id}"``: every copy of one event lands in the same
  partition.
- Recipients without ``email`` get no email; an event without ``notification`` stores no
  in-app notification. An event with neither is recorded as processed and does nothing.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from hub.intake.envelope import MAX_EVENT_BYTES, BadEvent, EventEnvelope, validate_envelope
from hub.rules import NotificationLimits

DEFAULT_TOPIC = "crm.events"

_RECIPIENT_FIELDS = frozenset({"user_id", "email"})
_NOTIFICATION_FIELDS = frozenset({"title", "body", "category", "data", "link"})
_EMAIL_FIELDS = frozenset({"template_key", "subject", "context"})
_DIGEST_FIELDS = frozenset({"key", "window_seconds"})


class InvalidEvent(ValueError):
    """An event the hub would refuse (dead-letter); ``str(err)`` says why."""


def make_event(
    *,
    tenant_id: str,
    type: str,
    recipients: Sequence[str | Mapping[str, str]],
    notification: Mapping[str, Any] | None = None,
    email: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    send_at: datetime | None = None,
    digest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A checked event envelope, ready for :func:`publish_event`.

    ``recipients`` are user ids (``"alice"``) or ``{"user_id": ..., "email": ...}``
    mappings. ``notification`` is ``{"title", "body"?, "category"?, "data"?, "link"?}``;
    ``email`` is ``{"template_key", "subject"?, "context"?}``. ``event_id`` defaults to a
    random uuid4 hex, ``occurred_at`` to now (a timezone-aware datetime; sent as UTC ISO 8601).
    ``send_at`` (timezone-aware) delays it; ``digest`` is ``{"key", "window_seconds"}``.

    Raises :class:`InvalidEvent` (a ``ValueError``) saying what is wrong, including
    misspelt field names in ``notification``, ``email`` and recipients, which the hub
    itself would silently ignore.
    """
    if isinstance(recipients, str | bytes):
        raise InvalidEvent("recipients must be a list of user ids or mappings, not one string")
    when = occurred_at if occurred_at is not None else datetime.now(UTC)
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidEvent("occurred_at must be timezone-aware (e.g. datetime.now(UTC))")
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex if event_id is None else event_id,
        "tenant_id": tenant_id,
        "type": type,
        "occurred_at": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "recipients": [_recipient(r, index) for index, r in enumerate(recipients)],
    }
    if notification is not None:
        event["notification"] = _part("notification", notification, _NOTIFICATION_FIELDS)
    if email is not None:
        event["email"] = _part("email", email, _EMAIL_FIELDS)
    if send_at is not None:
        if send_at.tzinfo is None or send_at.utcoffset() is None:
            raise InvalidEvent("send_at must be timezone-aware (e.g. datetime.now(UTC))")
        event["send_at"] = send_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if digest is not None:
        event["digest"] = _part("digest", digest, _DIGEST_FIELDS)
    validate_event(event)
    return event


def validate_event(
    event: Mapping[str, Any], *, limits: NotificationLimits | None = None
) -> EventEnvelope:
    """Check ``event`` with the hub's rules (envelope, notification limits, size).

    ``limits`` default to the hub's default settings. Returns the parsed envelope; raises
    :class:`InvalidEvent` with the reason the hub would give when dead-lettering it.
    """
    if not isinstance(event, Mapping):
        raise InvalidEvent("event must be a JSON object (a mapping)")
    document = dict(event)
    try:
        encoded = _encode(document)
    except TypeError as exc:
        raise InvalidEvent(f"event is not JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_EVENT_BYTES:
        raise InvalidEvent(
            f"event encodes to {len(encoded)} bytes, more than the hub's {MAX_EVENT_BYTES}"
        )
    try:
        # Decoded again: what the hub validates is the JSON, not the Python objects.
        return validate_envelope(orjson.loads(encoded), limits or NotificationLimits())
    except BadEvent as exc:
        raise InvalidEvent(str(exc)) from None


def event_key(event: Mapping[str, Any]) -> bytes:
    """The Kafka key of an event: ``{tenant_id}:{event_id}``, UTF-8."""
    return f"{event['tenant_id']}:{event['event_id']}".encode()


async def publish_event(
    producer: AIOKafkaProducer, event: Mapping[str, Any], *, topic: str = DEFAULT_TOPIC
) -> None:
    """Check ``event`` and send it; returns once the broker acknowledged it.

    ``producer`` is a started ``AIOKafkaProducer`` (``acks="all"`` recommended). Raises
    :class:`InvalidEvent` before sending anything when the event is invalid, and aiokafka's
    ``KafkaError`` when the broker does not take it (then sending again is safe).
    """
    validate_event(event)
    await producer.send_and_wait(topic, _encode(dict(event)), key=event_key(event))


async def publish_events(
    bootstrap_servers: str,
    events: Iterable[Mapping[str, Any]],
    *,
    topic: str = DEFAULT_TOPIC,
    limits: NotificationLimits | None = None,
) -> int:
    """Check every event, then send them all with a producer of its own; the count sent.

    Nothing is sent when any event is invalid (:class:`InvalidEvent` names each bad one by
    its position). Returns after the broker acknowledged every event. ``limits`` are the
    hub's notification limits when they differ from its defaults.
    """
    checked = check_events(events, limits=limits)
    if not checked:
        return 0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, _encode(dict(event)), key=event_key(event))
            for event in checked
        ]
        await producer.flush()
        await asyncio.gather(*sent)  # raises if the broker refused any of them
    finally:
        await producer.stop()
    return len(checked)


def check_events(
    events: Iterable[Mapping[str, Any]], *, limits: NotificationLimits | None = None
) -> list[Mapping[str, Any]]:
    """Every event checked (see :func:`validate_event`). When some are invalid, raises
    :class:`InvalidEvent` with one line per bad event: its 1-based position, its event id
    and the reason."""
    checked: list[Mapping[str, Any]] = []
    problems: list[str] = []
    for number, event in enumerate(events, start=1):
        try:
            validate_event(event, limits=limits)
        except InvalidEvent as exc:
            problems.append(f"{describe(number, event)}: {exc}")
        checked.append(event)
    if problems:
        raise InvalidEvent(_problem_list(problems))
    return checked


def read_event_file(
    path: str | Path, *, limits: NotificationLimits | None = None
) -> list[dict[str, Any]]:
    """Events from a file (``"-"``: stdin), checked; what ``notifyhub publish`` sends.

    The file holds one JSON event, a JSON array of events, or JSON lines (one event per
    line; blank lines are skipped). Raises :class:`InvalidEvent` listing every bad event
    (or the JSON error), so that a file is published whole or not at all.
    """
    raw = sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
    if not raw.strip():
        raise InvalidEvent("no events: the input is empty")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as whole_error:
        lines = raw.splitlines()
        if _starts_json_lines(lines):
            return _read_json_lines(lines, limits)
        raise InvalidEvent(f"not JSON: {whole_error}") from None
    if isinstance(document, dict):
        events: list[Any] = [document]
    elif isinstance(document, list):
        events = document
    else:
        raise InvalidEvent(
            f"expected an event object or an array of events, got {type(document).__name__}"
        )
    if not events:
        raise InvalidEvent("no events: the array is empty")
    check_events(events, limits=limits)
    return events


def _starts_json_lines(lines: list[bytes]) -> bool:
    """Whether the first non-blank line is a JSON object by itself (JSON lines)."""
    for line in lines:
        if line.strip():
            try:
                return isinstance(orjson.loads(line), dict)
            except orjson.JSONDecodeError:
                return False
    return False


def _read_json_lines(lines: list[bytes], limits: NotificationLimits | None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    problems: list[str] = []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {line_number}: not JSON: {exc}")
            continue
        try:
            validate_event(event, limits=limits)
        except InvalidEvent as exc:
            event_id = event.get("event_id") if isinstance(event, dict) else None
            named = f" (event_id {event_id!r})" if event_id is not None else ""
            problems.append(f"line {line_number}{named}: {exc}")
            continue
        events.append(event)
    if problems:
        raise InvalidEvent(_problem_list(problems))
    return events


def _problem_list(problems: list[str], shown: int = 50) -> str:
    text = "\n".join(problems[:shown])
    if len(problems) > shown:
        text += f"\n... and {len(problems) - shown} more invalid events"
    return text


def describe(number: int, event: object) -> str:
    """``event 3 (event_id 'abc')``: how errors name an event."""
    event_id = event.get("event_id") if isinstance(event, Mapping) else None
    return f"event {number}" + (f" (event_id {event_id!r})" if event_id is not None else "")


def _encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)


def _recipient(recipient: str | Mapping[str, str], index: int) -> dict[str, str]:
    if isinstance(recipient, str):
        return {"user_id": recipient}
    if not isinstance(recipient, Mapping):
        raise InvalidEvent(
            f"recipients.{index}: expected a user id or a mapping with 'user_id', "
            f"got {type(recipient).__name__}"
        )
    unknown = set(recipient) - _RECIPIENT_FIELDS
    if unknown:
        raise InvalidEvent(
            f"recipients.{index}: unknown field(s) {', '.join(sorted(map(str, unknown)))} "
            f"(known: email, user_id)"
        )
    return {key: value for key, value in recipient.items() if value is not None}


def _part(name: str, part: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise InvalidEvent(f"{name} must be a mapping, got {type(part).__name__}")
    unknown = set(part) - known
    if unknown:
        raise InvalidEvent(
            f"{name}: unknown field(s) {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(sorted(known))})"
        )
    return {key: value for key, value in part.items() if value is not None}
