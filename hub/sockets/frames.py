"""Checking the Engine.IO packets of a polling POST before engine.io decodes them.

engine.io decodes a polling body inside a catch-all that logs a traceback and answers
200, and answers some packet types by waiting for a GET that may never come: garbage
from a client becomes a traceback per request or a request that hangs. What fails these
checks is refused at our layer instead (400). WebSocket frames are checked by the
transport (hub/sockets/transport.py).
"""

from __future__ import annotations

import binascii
import urllib.parse

from engineio import payload

# Engine.IO v4 packet types are open 0, close 1, ping 2, pong 3, message 4, upgrade 5 and
# noop 6. A client may send close, pong and message in a polling POST: engine.io answers
# any other type by closing the session and waiting for its queue to drain, which only a
# later GET does, so the POST would hang without end.
POLLING_PACKET_TYPES = frozenset("134")
PACKET_SEPARATOR = "\x1e"


def packet_error(encoded: str, types: frozenset[str] = POLLING_PACKET_TYPES) -> str | None:
    """Why ``encoded`` (one text packet) is not an Engine.IO packet of one of ``types``,
    or None if it is."""
    if not encoded:
        return "empty packet"
    if encoded[0] == "b":
        try:
            binascii.a2b_base64(encoded[1:].encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            return "binary packet is not valid base64"
        return None
    if encoded[0] not in types:
        return f"unexpected packet type {encoded[0]!r}"
    return None


def payload_error(body: bytes) -> str | None:
    """Why ``body`` (a polling POST) is not an Engine.IO payload, or None if it is."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "payload is not UTF-8"
    if text.startswith("d="):  # JSONP polling wraps the payload in a form field
        text = urllib.parse.parse_qs(text).get("d", [""])[0]
    if not text:
        return "empty payload"
    packets = text.split(PACKET_SEPARATOR)
    if len(packets) > payload.Payload.max_decode_packets:
        return f"more than {payload.Payload.max_decode_packets} packets in one payload"
    for encoded in packets:
        error = packet_error(encoded)
        if error is not None:
            return error
    return None
