"""Push end to end: devices API -> notification stored -> push delivery recorded in the same
transaction -> worker process -> local Web Push / FCM / APNs stand-ins; what the push
services answer (gone, busy) and workers killed mid-send."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hub.cli import main as cli_main
from hub.realtime import NOTIFICATIONS_NAMESPACE
from hub.settings import Settings
from hub.vapid import b64url_decode, generate_vapid_keys, vapid_public_key
from tests.harness.api import ApiClient
from tests.harness.hub import RunningHub, SioConnect
from tests.harness.ports import eventually
from tests.harness.push import (
    BrowserSubscription,
    FakeApns,
    FakePushServices,
    apns_key_file,
    service_account_file,
)
from tests.harness.tokens import hs256_token
from tests.harness.worker import WorkerStarter

PushStack = Callable[..., Awaitable[tuple[RunningHub, Settings]]]
VAPID = generate_vapid_keys()


@pytest.fixture
def push_stack(
    hub_factory: Callable[..., Any],
    email_settings: Callable[..., Settings],
    worker_process: WorkerStarter,
) -> PushStack:
    """A hub and a worker process on a task queue of this test's own, pushing always
    (these tests are about sending; who is connected is tested apart)."""

    async def start(*, workers: int = 1, **overrides: Any) -> tuple[RunningHub, Settings]:
        values: dict[str, Any] = {
            "push_policy": "always",
            "vapid_private_key": VAPID.private_key,
            "vapid_subject": "mailto:ops@example.com",
            "push_timeout_seconds": 2.0,
            "email_sweep_interval_seconds": 0.2,
            **overrides,
        }
        settings = email_settings(**values)
        hub: RunningHub = await hub_factory(settings)
        for _ in range(workers):
            await worker_process(settings)
        return hub, settings

    return start


async def deliveries(hub: RunningHub, tenant: str, notification_id: str) -> list[dict[str, Any]]:
    status, body = await ApiClient.for_service(hub.url, tenant).get(
        f"/api/notifications/{notification_id}/deliveries/"
    )
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


async def statuses(hub: RunningHub, tenant: str, notification_id: str) -> list[str]:
    return [item["status"] for item in await deliveries(hub, tenant, notification_id)]


async def register(client: ApiClient, body: dict[str, Any]) -> str:
    status, answer = await client.post("/api/devices/", body)
    assert status == 201, answer
    device_id: str = answer["id"]
    return device_id


# -- devices API -----------------------------------------------------------------------------


async def test_devices_register_once_list_and_delete(
    hub_factory: Callable[..., Any], hub_settings: Callable[..., Settings], tenant: str
) -> None:
    hub: RunningHub = await hub_factory(hub_settings(vapid_private_key=VAPID.private_key))
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    subscription = BrowserSubscription("https://push.example.net/wp/abc").as_json()

    status, first = await ann.post(
        "/api/devices/", {"kind": "webpush", "subscription": subscription}
    )
    assert status == 201 and first["kind"] == "webpush"
    status, again = await ann.post(
        "/api/devices/", {"kind": "webpush", "subscription": subscription}
    )
    assert (status, again["id"]) == (200, first["id"])
    phone = await register(ann, {"kind": "fcm", "token": "fcm-token-1"})

    status, listed = await ann.get("/api/devices/")
    assert [d["id"] for d in listed["items"]] == [first["id"], phone]
    # Another user of the tenant sees none of them and cannot remove them.
    bob = ApiClient.for_user(hub.url, tenant, "bob")
    assert (await bob.get("/api/devices/"))[1]["items"] == []
    assert (await bob.delete(f"/api/devices/{phone}/"))[0] == 404
    assert (await ann.delete(f"/api/devices/{phone}/"))[0] == 204
    assert [d["id"] for d in (await ann.get("/api/devices/"))[1]["items"]] == [first["id"]]

    status, key = await ann.get("/api/push/vapid-public-key/")
    assert (status, key["public_key"]) == (200, VAPID.public_key)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "webpush", "token": "x"},
        {"kind": "fcm"},
        {"kind": "apns", "token": "has space"},
        {"kind": "sms", "token": "x"},
        {
            "kind": "webpush",
            "subscription": {"endpoint": "ftp://x", "keys": {"p256dh": "AA", "auth": "AA"}},
        },
        # Keys that cannot encrypt: a 64-byte point, a 15-byte secret.
        {
            "kind": "webpush",
            "subscription": {
                "endpoint": "https://p.example/x",
                "keys": {"p256dh": "B" * 86, "auth": "A" * 22},
            },
        },
        {"kind": "fcm", "token": "t" * 5000},
    ],
)
async def test_bad_device_registrations_are_400(
    hub_factory: Callable[..., Any],
    hub_settings: Callable[..., Settings],
    tenant: str,
    body: dict[str, Any],
) -> None:
    hub: RunningHub = await hub_factory(hub_settings())
    status, answer = await ApiClient.for_user(hub.url, tenant, "ann").post("/api/devices/", body)
    assert status == 400, answer
    assert answer["error"]["code"] == "validation_error"


async def test_vapid_public_key_is_404_when_web_push_is_not_configured(
    hub_factory: Callable[..., Any], hub_settings: Callable[..., Settings], tenant: str
) -> None:
    hub: RunningHub = await hub_factory(hub_settings())
    status, answer = await ApiClient.for_user(hub.url, tenant, "ann").get(
        "/api/push/vapid-public-key/"
    )
    assert (status, answer["error"]["code"]) == (404, "not_configured")


def test_a_bad_vapid_key_is_refused_at_start(hub_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="NOTIFYHUB_VAPID_PRIVATE_KEY"):
        hub_settings(vapid_private_key="not-a-key")


# -- Web Push ----------------------------------------------------------------------------------


async def test_web_push_is_encrypted_for_the_browser_and_signed_with_vapid(
    push_stack: PushStack, push_services: FakePushServices, tenant: str
) -> None:
    hub, _ = await push_stack()
    browser = BrowserSubscription(f"{push_services.url}/wp/ann-laptop")
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    await register(ann, {"kind": "webpush", "subscription": browser.as_json()})
    [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(
        ["ann"], title="Deal won", category="deals", link="/deals/7"
    )

    await eventually(lambda: push_services.for_path("/wp/ann-laptop"), timeout=20)
    [push] = push_services.for_path("/wp/ann-laptop")
    # Only the browser's private key opens it (RFC 8291 aes128gcm).
    assert push.headers["Content-Encoding"] == "aes128gcm"
    assert browser.decrypt(push.body) == {
        "id": notification_id,
        "title": "Deal won",
        "body": "b",
        "link": "/deals/7",
        "category": "deals",
        "seq": 1,
    }
    # RFC 8292: "vapid t=<JWT for this push service's origin>, k=<our public key>".
    scheme, params = push.headers["Authorization"].split(" ", 1)
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert scheme == "vapid" and fields["k"] == VAPID.public_key
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b64url_decode(VAPID.public_key)
    )
    claims = jwt.decode(fields["t"], public_key, algorithms=["ES256"], audience=push_services.url)
    assert claims["sub"] == "mailto:ops@example.com"
    assert push.headers["Topic"] == f"n{notification_id}"

    async def sent() -> bool:
        return await statuses(hub, tenant, notification_id) == ["sent"]

    await eventually(sent, timeout=10)


async def test_a_gone_device_is_removed_and_a_busy_service_is_retried(
    push_stack: PushStack, push_services: FakePushServices, tenant: str
) -> None:
    hub, _ = await push_stack()
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    gone = await register(
        ann,
        {
            "kind": "webpush",
            "subscription": BrowserSubscription(f"{push_services.url}/wp/old").as_json(),
        },
    )
    await register(
        ann,
        {
            "kind": "webpush",
            "subscription": BrowserSubscription(f"{push_services.url}/wp/busy").as_json(),
        },
    )
    push_services.answers = {"old": [410], "busy": [503, 429]}
    [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(["ann"])

    async def settled() -> bool:
        found = await deliveries(hub, tenant, notification_id)
        return sorted(item["status"] for item in found) == ["gone", "sent"]

    await eventually(settled, timeout=30)
    found = {item["target"]: item for item in await deliveries(hub, tenant, notification_id)}
    assert found[f"webpush:{gone}"]["attempts"] == 1
    busy = next(item for target, item in found.items() if target != f"webpush:{gone}")
    assert busy["attempts"] == 3 and busy["last_error"].startswith("HTTP 429")
    assert len(push_services.for_path("/wp/busy")) == 3
    # The gone device is no longer the user's; the busy one still is.
    assert [d["id"] for d in (await ann.get("/api/devices/"))[1]["items"]] != [gone]
    assert gone not in [d["id"] for d in (await ann.get("/api/devices/"))[1]["items"]]


async def test_a_push_is_sent_once_when_two_workers_race_and_replaced_when_one_dies_mid_send(
    push_stack: PushStack,
    push_services: FakePushServices,
    tenant: str,
    worker_process: WorkerStarter,
) -> None:
    """Two workers compete for every delivery: each is sent once. Then the worker holding a
    push the service has not answered is killed (-9): after its lease another worker sends
    it again under the same Topic, so the device replaces it rather than showing two."""
    hub, settings = await push_stack(workers=0)
    workers = [await worker_process(settings) for _ in range(2)]
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    for name in ("a", "b", "c"):
        await register(
            ann,
            {
                "kind": "webpush",
                "subscription": BrowserSubscription(f"{push_services.url}/wp/{name}").as_json(),
            },
        )
    service = ApiClient.for_service(hub.url, tenant)
    first = await service.notify(["ann"])
    await eventually(lambda: len(push_services.for_path("/wp/")) >= 3, timeout=20)
    await eventually(lambda: statuses(hub, tenant, first[0]), timeout=5)

    async def all_sent(notification_id: str) -> bool:
        return await statuses(hub, tenant, notification_id) == ["sent"] * 3

    await eventually(lambda: all_sent(first[0]), timeout=10)
    assert sorted(r.path for r in push_services.received) == ["/wp/a", "/wp/b", "/wp/c"]

    # The workers die holding pushes the service has not answered yet.
    push_services.received.clear()
    push_services.hold = asyncio.Event()
    [second] = await service.notify(["ann"], title="again")
    await eventually(lambda: len(push_services.for_path("/wp/")) == 3, timeout=20)
    for worker in workers:
        os.kill(worker.pid, signal.SIGKILL)
    push_services.hold.set()  # the service took them, but nobody hears it
    await worker_process(settings)

    await eventually(lambda: all_sent(second), timeout=30)
    assert [item["attempts"] for item in await deliveries(hub, tenant, second)] == [2, 2, 2]
    by_device: dict[str, list[str]] = {}
    for request in push_services.received:
        by_device.setdefault(request.path, []).append(request.headers["Topic"])
    # Each sent once more after the lease, under the same Topic: the device replaces the
    # first copy instead of showing two.
    assert by_device == {f"/wp/{name}": [f"n{second}"] * 2 for name in "abc"}


# -- FCM and APNs ------------------------------------------------------------------------------


async def test_fcm_pushes_with_a_cached_oauth_token_and_drops_unregistered_tokens(
    push_stack: PushStack, push_services: FakePushServices, tenant: str, tmp_path: Path
) -> None:
    hub, _ = await push_stack(
        fcm_credentials_file=str(service_account_file(tmp_path, push_services)),
        fcm_url=push_services.url,
    )
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    await register(ann, {"kind": "fcm", "token": "phone-1"})
    stale = await register(ann, {"kind": "fcm", "token": "phone-2"})
    push_services.answers = {"phone-2": [404]}
    service = ApiClient.for_service(hub.url, tenant)
    first = (await service.notify(["ann"], title="One", category="deals"))[0]

    async def settled(notification_id: str, expected: list[str]) -> bool:
        return sorted(await statuses(hub, tenant, notification_id)) == expected

    await eventually(lambda: settled(first, ["gone", "sent"]), timeout=20)

    async def device_removed() -> bool:
        return stale not in [d["id"] for d in (await ann.get("/api/devices/"))[1]["items"]]

    # The outcome is recorded before the device is removed: wait for both.
    await eventually(device_removed, timeout=10)
    second = (await service.notify(["ann"], title="Two"))[0]
    await eventually(lambda: settled(second, ["sent"]), timeout=20)

    sends = push_services.for_path("/messages:send")
    assert [r.path for r in sends] == ["/v1/projects/notifyhub-test/messages:send"] * 3
    message = json.loads(sends[-1].body)["message"]
    assert message["token"] == "phone-1"
    assert message["notification"] == {"title": "Two", "body": "b"}
    assert message["data"]["id"] == second and message["data"]["seq"] == "2"
    assert message["android"]["collapse_key"] == f"n{second}"
    # One OAuth token for all three sends (cached until it expires).
    assert push_services.fcm_tokens_issued == 1
    assert {r.headers["Authorization"] for r in sends} == {"Bearer ya29.test-1"}
    assert stale not in [d["id"] for d in (await ann.get("/api/devices/"))[1]["items"]]


async def test_apns_pushes_over_http2_with_a_provider_token(
    push_stack: PushStack, tenant: str, tmp_path: Path
) -> None:
    key_file, public_key = apns_key_file(tmp_path)

    def answer(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        token = headers["authorization"].removeprefix("bearer ")
        claims = jwt.decode(token, public_key, algorithms=["ES256"])
        assert (
            claims["iss"] == "TEAM123456"
            and jwt.get_unverified_header(token)["kid"] == "KEY1234567"
        )
        if headers[":path"].endswith("/dead-token"):
            return 410, {"reason": "Unregistered"}
        return 200, None

    apns = FakeApns(answer)
    await apns.start()
    try:
        hub, _ = await push_stack(
            apns_key_file=str(key_file),
            apns_key_id="KEY1234567",
            apns_team_id="TEAM123456",
            apns_topic="com.example.crm",
            apns_url=apns.url,
        )
        ann = ApiClient.for_user(hub.url, tenant, "ann")
        await register(ann, {"kind": "apns", "token": "live-token"})
        await register(ann, {"kind": "apns", "token": "dead-token"})
        [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(["ann"], title="Hi")

        async def settled() -> bool:
            return sorted(await statuses(hub, tenant, notification_id)) == ["gone", "sent"]

        await eventually(settled, timeout=20)
    finally:
        await apns.close()
    live = next(r for r in apns.received if r.path == "/3/device/live-token")
    assert live.headers["apns-topic"] == "com.example.crm"
    assert live.headers["apns-push-type"] == "alert"
    assert live.headers["apns-collapse-id"] == f"n{notification_id}"
    document = json.loads(live.body)
    assert document["aps"]["alert"] == {"title": "Hi", "body": "b"}
    assert document["notification"]["id"] == notification_id


async def test_unconfigured_channels_fail_their_pushes_saying_what_is_missing(
    push_stack: PushStack, tenant: str
) -> None:
    hub, _ = await push_stack()
    await register(ApiClient.for_user(hub.url, tenant, "ann"), {"kind": "apns", "token": "t1"})
    [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(["ann"])

    async def failed() -> list[dict[str, Any]]:
        return [
            i for i in await deliveries(hub, tenant, notification_id) if i["status"] == "failed"
        ]

    await eventually(failed, timeout=20)
    [item] = await failed()
    assert "NOTIFYHUB_APNS_KEY_FILE" in item["last_error"]


async def test_deliveries_are_the_owners_or_the_tenants_services_only(
    hub_factory: Callable[..., Any], hub_settings: Callable[..., Settings], tenant: str
) -> None:
    hub: RunningHub = await hub_factory(hub_settings())
    [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(["ann"])
    path = f"/api/notifications/{notification_id}/deliveries/"
    assert (await ApiClient.for_user(hub.url, tenant, "ann").get(path)) == (200, {"items": []})
    assert (await ApiClient.for_user(hub.url, tenant, "bob").get(path))[0] == 404
    assert (await ApiClient.for_service(hub.url, "other-tenant").get(path))[0] == 404
    assert (
        await ApiClient.for_user(hub.url, tenant, "ann").get("/api/notifications/x/deliveries/")
    )[0] == 404


# -- who gets a push ---------------------------------------------------------------------------


async def test_offline_policy_pushes_only_users_without_a_connected_socket(
    hub_factory: Callable[..., Any],
    hub_settings: Callable[..., Settings],
    sio_connect: SioConnect,
    push_services: FakePushServices,
    tmp_path: Path,
) -> None:
    """Embedded profile (one process, in-process tasks): the node's own sockets say who is
    connected."""
    hub: RunningHub = await hub_factory(
        hub_settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
            redis_url=None,
            auto_migrate=True,
            vapid_private_key=VAPID.private_key,
        )
    )
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    for user in ("online", "offline"):
        subscription = BrowserSubscription(f"{push_services.url}/wp/{user}").as_json()
        await register(
            ApiClient.for_user(hub.url, tenant, user),
            {"kind": "webpush", "subscription": subscription},
        )
    socket = await sio_connect(
        hub.url, NOTIFICATIONS_NAMESPACE, token=hs256_token(tenant=tenant, user="online")
    )
    service = ApiClient.for_service(hub.url, tenant)
    [for_online] = await service.notify(["online"])
    [for_offline] = await service.notify(["offline"])
    await socket.wait_for("notification:new")

    async def settled() -> bool:
        return (
            await statuses(hub, tenant, for_online),
            await statuses(hub, tenant, for_offline),
        ) == (["skipped"], ["sent"])

    await eventually(settled, timeout=20)
    assert [r.path for r in push_services.received] == ["/wp/offline"]


def test_vapid_keys_command_prints_a_pair_that_belongs_together(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["vapid-keys"]) == 0
    output = capsys.readouterr().out
    private = output.split("NOTIFYHUB_VAPID_PRIVATE_KEY=", 1)[1].split()[0]
    public = output.rsplit(": ", 1)[1].strip()
    assert vapid_public_key(private) == public
    assert len(b64url_decode(public)) == 65


async def test_removing_a_device_ends_its_pending_pushes(
    push_stack: PushStack, push_services: FakePushServices, tenant: str
) -> None:
    """No worker runs: the push waits ``queued``; once its device is removed it ends
    ``gone`` (and no sweeper will ever send it)."""
    hub, _ = await push_stack(workers=0)
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    browser = BrowserSubscription(f"{push_services.url}/wp/laptop")
    device = await register(ann, {"kind": "webpush", "subscription": browser.as_json()})
    [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(["ann"])
    assert await statuses(hub, tenant, notification_id) == ["queued"]
    assert (await ann.delete(f"/api/devices/{device}/"))[0] == 204
    assert await statuses(hub, tenant, notification_id) == ["gone"]


async def test_pushes_wait_out_the_users_quiet_hours(
    push_stack: PushStack, push_services: FakePushServices, tenant: str
) -> None:
    """A user in quiet hours (a window around now, in their zone) gets the notification in
    the app at once; the push waits, due when the window ends."""
    hub, _ = await push_stack()
    ann = ApiClient.for_user(hub.url, tenant, "ann")
    browser = BrowserSubscription(f"{push_services.url}/wp/quiet")
    await register(ann, {"kind": "webpush", "subscription": browser.as_json()})
    zone = ZoneInfo("Asia/Tokyo")
    local = datetime.now(zone)
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=2)).strftime("%H:%M")
    status, _ = await ann.request(
        "PATCH",
        "/api/preferences/",
        json={"quiet_hours": {"start": start, "end": end, "timezone": "Asia/Tokyo"}},
    )
    assert status == 200
    [notification_id] = await ApiClient.for_service(hub.url, tenant).notify(["ann"])

    async def waiting() -> list[dict[str, Any]]:
        found = await deliveries(hub, tenant, notification_id)
        return [d for d in found if d["status"] == "retrying"]

    await eventually(waiting, timeout=20)
    [delivery] = await waiting()
    assert delivery["last_error"] == "waiting out the user's quiet hours"
    assert push_services.for_path("/wp/quiet") == []
    assert (await ann.get("/api/notifications/"))[1]["items"][0]["id"] == notification_id
