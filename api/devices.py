"""Push: devices of the caller (``/api/devices/``), the VAPID public key browsers subscribe
with, and the deliveries of a notification."""

from __future__ import annotations

from aiohttp import web

from api.errors import ApiError, json_response
from api.payloads import read_body
from hub.keys import DEVICES, NOTIFICATIONS, PRINCIPAL, SETTINGS
from hub.responses import DeliveryList, Device, DeviceList, VapidPublicKey
from hub.schemas import RegisterDeviceIn
from hub.vapid import vapid_public_key


async def register_device(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    payload = await read_body(request, RegisterDeviceIn)
    subscription = payload.subscription
    registration = await request.app[DEVICES].register(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        kind=payload.kind,
        token=subscription.endpoint if subscription is not None else payload.token or "",
        keys=subscription.keys.model_dump() if subscription is not None else None,
    )
    reply = Device.model_validate(registration.device)
    return json_response(reply.model_dump(mode="json"), status=201 if registration.created else 200)


async def list_devices(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    items = await request.app[DEVICES].of_user(
        tenant_id=principal.tenant_id, user_id=principal.user_id
    )
    return json_response(DeviceList.model_validate({"items": items}).model_dump(mode="json"))


async def delete_device(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    await request.app[DEVICES].delete(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        device_id=request.match_info["device_id"],
    )
    return web.Response(status=204)


async def get_vapid_public_key(request: web.Request) -> web.Response:
    private_key = request.app[SETTINGS].vapid_private_key
    if private_key is None:
        raise ApiError(404, "not_configured", "Web Push is not configured on this hub")
    public_key = vapid_public_key(private_key.get_secret_value())
    return json_response(VapidPublicKey(public_key=public_key).model_dump(mode="json"))


async def notification_deliveries(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    items = await request.app[NOTIFICATIONS].deliveries(
        tenant_id=principal.tenant_id,
        notification_id=request.match_info["notification_id"],
        # A service of the tenant sees any notification's deliveries; a user only theirs.
        user_id=None if principal.is_service else principal.user_id,
    )
    return json_response(DeliveryList.model_validate({"items": items}).model_dump(mode="json"))
