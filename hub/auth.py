"""JWT verification, shared by the REST middleware, Socket.IO connect and the legacy WebSocket.

Algorithms are pinned by configuration and the key is chosen by the algorithm family, never
by what the token claims to be: an HMAC token is checked against the shared secret only, a
public-key token against the configured public key or the JWKS only. That closes the
classic "HS256 signed with the RSA public key" confusion.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson

from hub.settings import HMAC_ALGORITHMS, Settings

log = logging.getLogger(__name__)

SERVICE_ROLE = "service"
REQUIRED_CLAIMS = ("sub", "tenant_id", "exp")
MAX_TOKEN_LENGTH = 4096


class AuthError(Exception):
    """The token is missing or not acceptable; ``str(err)`` is safe to show the client."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by a verified token."""

    tenant_id: str
    user_id: str
    roles: frozenset[str]
    expires_at: float

    @property
    def is_service(self) -> bool:
        return SERVICE_ROLE in self.roles


class JwksCache:
    """Keys from a JWKS URL, cached; an unknown ``kid`` triggers a rate-limited refetch."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        ttl_seconds: float,
        min_refetch_seconds: float,
    ) -> None:
        self._url = url
        self._session = session
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")  # last successful fetch
        self._attempted_at = float("-inf")  # last attempt, successful or not
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        if time.monotonic() - self._fetched_at > self._ttl:
            await self._refresh()
        key = self._lookup(kid)
        if key is None:
            # Maybe the issuer rotated its keys: look again (rate-limited, so junk kids
            # cannot make us hammer the issuer).
            await self._refresh()
            key = self._lookup(kid)
        if key is None:
            raise AuthError("token signed with an unknown key")
        return key

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._attempted_at < self._min_refetch:
                return
            self._attempted_at = time.monotonic()
            try:
                timeout = aiohttp.ClientTimeout(total=5)
                async with self._session.get(self._url, timeout=timeout) as response:
                    response.raise_for_status()
                    document = await response.json(content_type=None)
                key_set = jwt.PyJWKSet.from_dict(document)
            except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
                # Keep the keys we have; the next try waits for the refetch interval.
                log.warning("JWKS fetch from %s failed: %s", self._url, exc)
                return
            self._keys = {key.key_id or f"#{i}": key for i, key in enumerate(key_set.keys)}
            self._fetched_at = self._attempted_at


class TokenVerifier:
    """Turns a bearer token into a :class:`Principal` or raises :class:`AuthError`."""

    def __init__(self, settings: Settings, *, jwks: JwksCache | None = None) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._secret = settings.jwt_secret.get_secret_value()
        self._public_key = settings.jwt_public_key
        self._jwks = jwks
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds

    async def verify(self, token: str | None) -> Principal:
        if not token or not isinstance(token, str):
            raise AuthError("missing token")
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthError("token too long")
        header = _unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise AuthError(f"algorithm {algorithm!r} is not accepted")
        key = await self._key_for(algorithm, header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            log.debug("token refused: %s", exc)
            raise AuthError("invalid token") from None
        return _principal_from(claims)

    async def _key_for(self, algorithm: str, kid: object) -> Any:
        if algorithm in HMAC_ALGORITHMS:
            return self._secret
        if self._jwks is not None and (kid is not None or self._public_key is None):
            jwk = await self._jwks.key_for(kid if isinstance(kid, str) else None)
            return jwk.key
        if self._public_key is not None:
            return self._public_key
        raise AuthError("no key configured for this algorithm")


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, to choose the key: ``jwt.decode`` checks the whole token after it.
    (``jwt.get_unverified_header`` would parse and check every segment one more time, on
    every socket connect and REST call.)"""
    encoded, dot, _ = token.partition(".")
    try:
        if not dot:
            raise ValueError("no payload")
        header = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error):  # orjson.JSONDecodeError is a ValueError
        raise AuthError("malformed token") from None
    if not isinstance(header, dict):
        raise AuthError("malformed token")
    return header


def _principal_from(claims: Mapping[str, Any]) -> Principal:
    subject, tenant = claims["sub"], claims["tenant_id"]
    if not _is_identifier(subject, 128):
        raise AuthError("claim 'sub' must be a non-empty string without control characters")
    if not _is_identifier(tenant, 64):
        raise AuthError("claim 'tenant_id' must be a non-empty string without control characters")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise AuthError("claim 'roles' must be a list of strings")
    return Principal(
        tenant_id=tenant, user_id=subject, roles=frozenset(roles), expires_at=float(claims["exp"])
    )


def _is_identifier(value: object, max_length: int) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_length
        and not any(ord(char) < 0x20 or char == "\x7f" for char in value)
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def mint_token(
    settings: Settings,
    *,
    tenant_id: str,
    user_id: str,
    roles: list[str] | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """A development token signed with the configured HMAC secret (``notifyhub token``)."""
    algorithm = next((alg for alg in settings.jwt_algorithms if alg in HMAC_ALGORITHMS), None)
    if algorithm is None:
        raise ValueError("minting needs an HMAC algorithm in NOTIFYHUB_JWT_ALGORITHMS")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "roles": roles or [],
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=algorithm)
