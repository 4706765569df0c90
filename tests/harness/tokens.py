"""Test signing keys and a token factory matching the hub settings used in tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

TEST_JWT_SECRET = "test-secret-0123456789-0123456789-abcdef"


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str
    private_key: Any


def _pems(private_key: Any) -> KeyPair:
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private_pem, public_pem, private_key)


@pytest.fixture(scope="session")
def rsa_keys() -> KeyPair:
    return _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def ec_keys() -> KeyPair:
    return _pems(ec.generate_private_key(ec.SECP256R1()))


def make_claims(
    *, tenant: str, user: str, roles: list[str] | None = None, ttl: int = 3600, **extra: Any
) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user,
        "tenant_id": tenant,
        "roles": roles or [],
        "iat": now,
        "exp": now + ttl,
    }
    claims.update(extra)
    return {key: value for key, value in claims.items() if value is not None}


def hs256_token(
    *, tenant: str, user: str, roles: list[str] | None = None, ttl: int = 3600, **extra: Any
) -> str:
    claims = make_claims(tenant=tenant, user=user, roles=roles, ttl=ttl, **extra)
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")
