"""Every token of the bad corpus is refused on REST and on both Socket.IO namespaces."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from hub.realtime import CHAT_NAMESPACE, NOTIFICATIONS_NAMESPACE
from tests.harness.hub import ConnectRefused, RunningHub, SettingsFactory, SioConnect
from tests.harness.tokens import TEST_JWT_SECRET, KeyPair, make_claims

AUDIENCE = "notifyhub"
ISSUER = "https://auth.crm.test"
NAMESPACES = (NOTIFICATIONS_NAMESPACE, CHAT_NAMESPACE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}.{_b64(signature)}"


def _hs256_with_raw_key(claims: dict[str, Any], key: bytes) -> str:
    # PyJWT refuses to HMAC-sign with a PEM key, so the attack token is built by hand.
    signing_input = (
        f"{_b64(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{_b64(orjson.dumps(claims))}"
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def good_claims(**changes: Any) -> dict[str, Any]:
    claims = make_claims(tenant="t-auth", user="u1", aud=AUDIENCE, iss=ISSUER)
    claims.update(changes)
    return {key: value for key, value in claims.items() if value is not None}


def bad_tokens(rsa_keys: KeyPair) -> dict[str, str]:
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    without = lambda claim: {k: v for k, v in good_claims().items() if k != claim}  # noqa: E731
    return {
        "alg_none": _unsigned({"alg": "none", "typ": "JWT"}, good_claims()),
        "alg_none_uppercase": _unsigned({"alg": "NONE", "typ": "JWT"}, good_claims()),
        "hs256_signed_with_rsa_public_key": _hs256_with_raw_key(
            good_claims(), rsa_keys.public_pem.encode()
        ),
        "hs256_wrong_secret": jwt.encode(good_claims(), "not-the-secret-" * 3, algorithm="HS256"),
        "rs256_wrong_key": jwt.encode(good_claims(), other_rsa, algorithm="RS256"),
        "hs512_not_accepted": jwt.encode(good_claims(), TEST_JWT_SECRET * 2, algorithm="HS512"),
        "expired": jwt.encode(good_claims(exp=now - 30), TEST_JWT_SECRET, algorithm="HS256"),
        "not_yet_valid": jwt.encode(good_claims(nbf=now + 600), TEST_JWT_SECRET, algorithm="HS256"),
        "missing_sub": jwt.encode(without("sub"), TEST_JWT_SECRET, algorithm="HS256"),
        "missing_tenant_id": jwt.encode(without("tenant_id"), TEST_JWT_SECRET, algorithm="HS256"),
        "missing_exp": jwt.encode(without("exp"), TEST_JWT_SECRET, algorithm="HS256"),
        "empty_sub": jwt.encode(good_claims(sub=""), TEST_JWT_SECRET, algorithm="HS256"),
        "numeric_tenant_id": jwt.encode(
            good_claims(tenant_id=7), TEST_JWT_SECRET, algorithm="HS256"
        ),
        "roles_not_a_list": jwt.encode(
            good_claims(roles="service"), TEST_JWT_SECRET, algorithm="HS256"
        ),
        "wrong_aud": jwt.encode(good_claims(aud="other-app"), TEST_JWT_SECRET, algorithm="HS256"),
        "missing_aud": jwt.encode(good_claims(aud=None), TEST_JWT_SECRET, algorithm="HS256"),
        "wrong_iss": jwt.encode(
            good_claims(iss="https://evil.test"), TEST_JWT_SECRET, algorithm="HS256"
        ),
        "tampered_payload": _tamper(jwt.encode(good_claims(), TEST_JWT_SECRET, algorithm="HS256")),
        "malformed_garbage": "this-is-not-a-jwt",
        "malformed_three_parts": "a.b.c",
        "malformed_bad_base64": "eyJhbGciOiJIUzI1NiJ9.%%%%.sig",
        "malformed_huge": "x" * 7_000,  # under the HTTP header limit, over ours
        "empty_string": "",
    }


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    return f"{header}.{_b64(orjson.dumps(claims))}.{signature}"


BAD_TOKEN_NAMES = [
    "alg_none",
    "alg_none_uppercase",
    "hs256_signed_with_rsa_public_key",
    "hs256_wrong_secret",
    "rs256_wrong_key",
    "hs512_not_accepted",
    "expired",
    "not_yet_valid",
    "missing_sub",
    "missing_tenant_id",
    "missing_exp",
    "empty_sub",
    "numeric_tenant_id",
    "roles_not_a_list",
    "wrong_aud",
    "missing_aud",
    "wrong_iss",
    "tampered_payload",
    "malformed_garbage",
    "malformed_three_parts",
    "malformed_bad_base64",
    "malformed_huge",
    "empty_string",
]


@pytest.fixture
async def strict_hub(hub_factory: Callable[..., Any], hub_settings: SettingsFactory) -> RunningHub:
    hub: RunningHub = await hub_factory(hub_settings(jwt_audience=AUDIENCE, jwt_issuer=ISSUER))
    return hub


async def rest_status(hub: RunningHub, headers: dict[str, str], query: str = "") -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{hub.url}/api/broadcasts/{query}", json={"title": "t", "body": "b"}, headers=headers
        ) as response,
    ):
        return response.status, await response.json()


async def assert_socket_refused(
    sio_connect: SioConnect, hub: RunningHub, namespace: str, **connect_kwargs: Any
) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await sio_connect(hub.url, namespace, **connect_kwargs)
    # The CONNECT_ERROR packet: {"message": "unauthorized", "data": {"code", "message"}}, which
    # the JS client exposes as err.message and err.data.
    packet = refused.value.data
    assert packet is not None, "refusal carried no data"
    assert packet["message"] == "unauthorized"
    assert packet["data"]["code"] == "unauthorized"
    assert packet["data"]["message"]


def test_corpus_names_match() -> None:
    assert sorted(BAD_TOKEN_NAMES) == sorted(bad_tokens(_dummy_keys()))


def _dummy_keys() -> KeyPair:
    return KeyPair(private_pem="", public_pem="-----BEGIN PUBLIC KEY-----", private_key=None)


async def test_a_valid_token_is_accepted_everywhere(
    strict_hub: RunningHub, sio_connect: SioConnect
) -> None:
    token = jwt.encode(good_claims(roles=["service"]), TEST_JWT_SECRET, algorithm="HS256")
    status, _ = await rest_status(strict_hub, {"Authorization": f"Bearer {token}"})
    assert status == 202
    for namespace in NAMESPACES:
        client = await sio_connect(strict_hub.url, namespace, token=token)
        assert client.client.connected


async def test_an_rs256_token_is_accepted(
    strict_hub: RunningHub, sio_connect: SioConnect, rsa_keys: KeyPair
) -> None:
    token = jwt.encode(good_claims(roles=["service"]), rsa_keys.private_key, algorithm="RS256")
    status, _ = await rest_status(strict_hub, {"Authorization": f"Bearer {token}"})
    assert status == 202
    client = await sio_connect(strict_hub.url, NOTIFICATIONS_NAMESPACE, token=token)
    assert client.client.connected


@pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
async def test_bad_token_is_refused(
    name: str, strict_hub: RunningHub, sio_connect: SioConnect, rsa_keys: KeyPair
) -> None:
    token = bad_tokens(rsa_keys)[name]
    status, body = await rest_status(strict_hub, {"Authorization": f"Bearer {token}"})
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    for namespace in NAMESPACES:
        if token:
            await assert_socket_refused(sio_connect, strict_hub, namespace, token=token)
        else:
            await assert_socket_refused(sio_connect, strict_hub, namespace, auth={"token": ""})


async def test_token_in_the_wrong_place_is_refused(
    strict_hub: RunningHub, sio_connect: SioConnect
) -> None:
    token = jwt.encode(good_claims(roles=["service"]), TEST_JWT_SECRET, algorithm="HS256")
    # REST takes the token from the Authorization header only: not the query, not a cookie,
    # not another scheme.
    for headers, query in [
        ({}, f"?token={token}"),
        ({"Cookie": f"token={token}"}, ""),
        ({"Authorization": f"Token {token}"}, ""),
        ({"Authorization": token}, ""),
        ({"X-Auth-Token": token}, ""),
    ]:
        status, body = await rest_status(strict_hub, headers, query)
        assert status == 401, (headers, query, body)
    # Socket.IO takes it from the auth object or an Authorization header, never the query.
    for namespace in NAMESPACES:
        await assert_socket_refused(sio_connect, strict_hub, namespace, query=f"?token={token}")
        await assert_socket_refused(sio_connect, strict_hub, namespace, auth={"jwt": token})
        await assert_socket_refused(sio_connect, strict_hub, namespace, auth={"token": [token]})


async def test_authorization_header_is_accepted_on_sockets(
    strict_hub: RunningHub, sio_connect: SioConnect
) -> None:
    token = jwt.encode(good_claims(), TEST_JWT_SECRET, algorithm="HS256")
    client = await sio_connect(
        strict_hub.url, CHAT_NAMESPACE, headers={"Authorization": f"Bearer {token}"}
    )
    assert client.client.connected


async def test_missing_token_is_refused(strict_hub: RunningHub, sio_connect: SioConnect) -> None:
    status, body = await rest_status(strict_hub, {})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    for namespace in NAMESPACES:
        await assert_socket_refused(sio_connect, strict_hub, namespace)


async def test_user_token_is_forbidden_on_service_route(strict_hub: RunningHub) -> None:
    token = jwt.encode(good_claims(), TEST_JWT_SECRET, algorithm="HS256")
    status, body = await rest_status(strict_hub, {"Authorization": f"Bearer {token}"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
