"""Public-key verification: a PEM key (RS256/ES256) and a JWKS URL with key rotation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hub.auth import AuthError, TokenVerifier
from hub.realtime import NOTIFICATIONS_NAMESPACE
from hub.settings import Settings
from tests.harness.auth_service import AuthServiceStub
from tests.harness.hub import ConnectRefused, RunningHub, SettingsFactory, SioConnect
from tests.harness.tokens import TEST_JWT_SECRET, KeyPair, make_claims


def jwk_of(private_key: Any, kid: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key())
    )
    document.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return document


def rs256(private_key: Any, kid: str, **claims: Any) -> str:
    return jwt.encode(
        make_claims(tenant="t-keys", user="u1", **claims),
        private_key,
        algorithm="RS256",
        headers={"kid": kid},
    )


async def rest_status(hub: RunningHub, token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{hub.url}/api/broadcasts/",
            json={"title": "t", "body": "b"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        return response.status


async def test_es256_public_key(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    ec_keys: KeyPair,
    sio_connect: SioConnect,
) -> None:
    hub = await hub_factory(
        hub_settings(jwt_algorithms=["ES256"], jwt_public_key=ec_keys.public_pem)
    )
    claims = make_claims(tenant="t-keys", user="svc", roles=["service"])
    assert await rest_status(hub, jwt.encode(claims, ec_keys.private_key, algorithm="ES256")) == 202
    # With only ES256 pinned, a perfectly signed HS256 token is refused.
    assert await rest_status(hub, jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")) == 401
    client = await sio_connect(
        hub.url,
        NOTIFICATIONS_NAMESPACE,
        token=jwt.encode(claims, ec_keys.private_key, algorithm="ES256"),
    )
    assert client.client.connected


async def test_jwks_url_with_rotation_and_rate_limited_refetch(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    auth_service: AuthServiceStub,
    sio_connect: SioConnect,
) -> None:
    first = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth_service.jwks = {"keys": [jwk_of(first, "k1")]}
    hub = await hub_factory(
        hub_settings(
            jwt_algorithms=["RS256"],
            jwt_public_key=None,
            jwt_jwks_url=f"{auth_service.url}/.well-known/jwks.json",
            jwks_min_refetch_seconds=0.0,
        )
    )
    assert await rest_status(hub, rs256(first, "k1", roles=["service"])) == 202
    client = await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=rs256(first, "k1"))
    assert client.client.connected
    fetches = auth_service.requests.count("/.well-known/jwks.json")
    assert fetches == 1, "the key set is cached between tokens"

    # The issuer rotates: a token with the new kid makes the hub look again.
    auth_service.jwks = {"keys": [jwk_of(first, "k1"), jwk_of(second, "k2")]}
    assert await rest_status(hub, rs256(second, "k2", roles=["service"])) == 202
    # A kid nobody knows is refused, and a token signed by the wrong key under a known kid too.
    assert await rest_status(hub, rs256(second, "k-unknown", roles=["service"])) == 401
    assert await rest_status(hub, rs256(second, "k1", roles=["service"])) == 401
    with pytest.raises(ConnectRefused):
        await sio_connect(hub.url, NOTIFICATIONS_NAMESPACE, token=rs256(second, "k-unknown"))


async def test_unknown_kids_do_not_hammer_the_issuer(
    hub_settings: SettingsFactory, auth_service: AuthServiceStub
) -> None:
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth_service.jwks = {"keys": [jwk_of(signer, "k1")]}
    settings: Settings = hub_settings(
        jwt_algorithms=["RS256"],
        jwt_public_key=None,
        jwt_jwks_url=f"{auth_service.url}/.well-known/jwks.json",
        jwks_min_refetch_seconds=60.0,
    )
    from hub.auth import JwksCache

    async with aiohttp.ClientSession() as http:
        verifier = TokenVerifier(
            settings,
            jwks=JwksCache(
                settings.jwt_jwks_url or "", http, ttl_seconds=300, min_refetch_seconds=60.0
            ),
        )
        principal = await verifier.verify(rs256(signer, "k1"))
        assert principal.tenant_id == "t-keys"
        for attempt in range(20):
            with pytest.raises(AuthError):
                await verifier.verify(rs256(signer, f"junk-{attempt}"))
    assert auth_service.requests.count("/.well-known/jwks.json") == 1


async def test_jwks_outage_is_a_refusal_not_a_crash(
    hub_factory: Callable[..., Any],
    hub_settings: SettingsFactory,
    auth_service: AuthServiceStub,
) -> None:
    signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth_service.failing_status = 503
    hub = await hub_factory(
        hub_settings(
            jwt_algorithms=["RS256"],
            jwt_public_key=None,
            jwt_jwks_url=f"{auth_service.url}/.well-known/jwks.json",
        )
    )
    assert await rest_status(hub, rs256(signer, "k1", roles=["service"])) == 401
