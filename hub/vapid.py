"""VAPID keys (RFC 8292) for Web Push: a P-256 pair, in the encodings browsers and push
libraries use (base64url of the raw 32-byte private scalar, and of the 65-byte uncompressed
public point, the ``applicationServerKey`` of ``pushManager.subscribe``)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


class InvalidVapidKey(ValueError):
    """The configured private key is not a base64url P-256 private scalar."""


# The contact push services accept (py-vapid signs nothing else): a mailto: address of a
# dotted domain (or localhost), or an https: URL.
_SUBJECT = re.compile(
    r"^(mailto:[^@\s]+@(localhost|[%\w-]+(\.[%\w-]+)+)|https://(localhost|[\w-]+\.[\w.-]+)\S*)$",
    re.IGNORECASE,
)


def check_vapid_subject(subject: str) -> str:
    if not _SUBJECT.match(subject):
        raise ValueError("must be a mailto: address (mailto:ops@example.com) or an https:// URL")
    return subject


@dataclass(frozen=True, slots=True)
class VapidKeys:
    private_key: str
    public_key: str


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_of(key: ec.EllipticCurvePrivateKey) -> str:
    return b64url(key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))


def generate_vapid_keys() -> VapidKeys:
    key = ec.generate_private_key(ec.SECP256R1())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    return VapidKeys(private_key=b64url(scalar), public_key=_public_of(key))


def vapid_public_key(private_key: str) -> str:
    """The public key that goes with ``private_key``; :class:`InvalidVapidKey` if it is not
    one (said at startup, not at the first push)."""
    try:
        scalar = b64url_decode(private_key.strip())
        if len(scalar) != 32:
            raise ValueError("not 32 bytes")
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
    except ValueError as exc:
        raise InvalidVapidKey(
            "NOTIFYHUB_VAPID_PRIVATE_KEY must be the base64url private key printed by "
            "`notifyhub vapid-keys`"
        ) from exc
    return _public_of(key)
