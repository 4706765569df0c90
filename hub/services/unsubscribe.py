"""One-click unsubscribe (RFC 8058): signed links in emails, and what following one does.

A token names a tenant, a user and a category and carries an HMAC-SHA256 of them under
``Settings.unsubscribe_key``. It has no expiry (a link in an old email keeps working, as
mail providers expect); rotating the key (``NOTIFYHUB_UNSUBSCRIBE_SECRET``) invalidates
every earlier link at once. Following a link turns the category's email off through
:meth:`hub.services.preferences.PreferenceService.unsubscribe`, as a PATCH of the user would.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from hub.errors import InvalidInput
from hub.vapid import b64url, b64url_decode

UNSUBSCRIBE_PATH = "/api/unsubscribe/"
TOKEN_VERSION = 1
# The longest token we sign (ids and a category of the longest, 4-byte characters) is
# about 1,400 characters; anything longer is not one of ours.
TOKEN_MAX_CHARS = 2048
# A mail header line holds at most 998 characters: a longer link is left out rather than
# folded into something no mail client could follow (only ids of unusual length get there).
HEADER_LINK_MAX_CHARS = 900


@dataclass(frozen=True, slots=True)
class Target:
    """Whose email of which category a token turns off."""

    tenant_id: str
    user_id: str
    category: str


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


def sign(key: bytes, target: Target) -> str:
    """The token of ``target``: ``base64url(JSON payload) "." base64url(HMAC)``."""
    document = [TOKEN_VERSION, target.tenant_id, target.user_id, target.category]
    payload = b64url(orjson.dumps(document))
    return f"{payload}.{b64url(_mac(key, payload))}"


def verify(key: bytes | None, token: str) -> Target:
    """The target of a token this hub signed with ``key``; :class:`InvalidInput` (400) for
    anything else: forged, altered, truncated, or signed with a key since rotated."""
    invalid = InvalidInput("this unsubscribe link is not valid (altered, or too old)")
    if key is None or len(token) > TOKEN_MAX_CHARS or token.count(".") != 1:
        raise invalid
    payload, mac = token.split(".")
    try:
        given = b64url_decode(mac)
    except (binascii.Error, ValueError):
        raise invalid from None
    if not hmac.compare_digest(given, _mac(key, payload)):
        raise invalid
    # Signed by us, so well-formed; checked anyway, a key may have been shared with a bug.
    try:
        version, tenant_id, user_id, category = orjson.loads(b64url_decode(payload))
    except (binascii.Error, ValueError, TypeError):
        raise invalid from None
    if version != TOKEN_VERSION or not all(
        isinstance(part, str) and part for part in (tenant_id, user_id, category)
    ):
        raise invalid
    return Target(tenant_id, user_id, category)


def link(public_url: str, token: str) -> str:
    return f"{public_url}{UNSUBSCRIBE_PATH}?token={quote(token, safe='')}"


def list_unsubscribe_headers(
    *, public_url: str | None, key: bytes | None, target: Target
) -> dict[str, str]:
    """The RFC 8058 headers of an email to ``target``; none without a public URL or key."""
    if public_url is None or key is None:
        return {}
    url = link(public_url, sign(key, target))
    if len(url) > HEADER_LINK_MAX_CHARS:
        return {}
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
