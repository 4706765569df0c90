"""Ids, sequence numbers and cursors as clients send them: one parser for each, one bound.

Ids and seqs are BIGINT in the database; a client may send anything. Every decimal number
of up to 18 digits fits (BIGINT's largest is 19 digits long), so that is the bound: a
longer one cannot name a row and is refused before PostgreSQL would fail on it.
"""

from __future__ import annotations

import base64
import binascii

from hub.errors import InvalidInput

MAX_ID_DIGITS = 18


def parse_id(value: object) -> int | None:
    """A non-negative integer given as decimal digits (or an int) within BIGINT; else None."""
    if isinstance(value, bool):
        return None
    text = str(value)
    # isdigit() alone takes "²" and other Unicode digits that int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_ID_DIGITS:
        return None
    return int(text)


def encode_cursor(*parts: object, prefix: str = "") -> str:
    """An opaque keyset cursor: ``prefix`` and the parts joined by ``|``, base64url."""
    raw = (prefix + "|".join(str(part) for part in parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int, *, prefix: str = "") -> list[str]:
    """The parts of a cursor made by :func:`encode_cursor`; anything else is a 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad_cursor() from None
    if not raw.startswith(prefix):
        raise bad_cursor()
    parts = raw[len(prefix) :].split("|")
    if len(parts) != arity:
        raise bad_cursor()
    return parts


def cursor_id(text: str) -> int:
    """An id or seq inside a cursor; refused like a forged cursor when it is not one."""
    value = parse_id(text)
    if value is None:
        raise bad_cursor()
    return value


def bad_cursor() -> InvalidInput:
    return InvalidInput("cursor is not valid", code="invalid_cursor")
