"""The base of every namespace: authentication once in ``on_connect``, thin event handlers.

Events named ``a:b`` are dispatched to ``on_a_b`` methods. A handler's return value is the
ack; a :class:`HubError` or invalid payload becomes ``{"ok": false, "error": {...}}`` and
anything unexpected is logged and answered with ``internal_error``: one client's bad input
never disconnects it or anybody else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pydantic
import socketio
from aiohttp import web

from hub.auth import AuthError, Principal, bearer_token
from hub.errors import HubError
from hub.keys import VERIFIER
from hub.sockets.rooms import tenant_room, user_room

log = logging.getLogger(__name__)

SESSION_PRINCIPAL = "principal"
LIFECYCLE_EVENTS = frozenset({"connect", "disconnect"})


def refused(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A connect refusal: the client sees ``err.message == code`` and ``err.data``."""
    return socketio.exceptions.ConnectionRefusedError(code, {"code": code, "message": message})


def unauthorized(message: str) -> socketio.exceptions.ConnectionRefusedError:
    return refused("unauthorized", message)


def token_from_handshake(environ: Mapping[str, Any], auth: object) -> str | None:
    """The token from the connect packet's ``auth`` object, else from an Authorization header.

    A token in the query string is deliberately ignored: URLs end up in proxy logs.
    """
    if isinstance(auth, Mapping):
        token = auth.get("token")
        if token is not None:
            return token if isinstance(token, str) else ""
    return bearer_token(environ.get("HTTP_AUTHORIZATION"))


def validation_ack(exc: pydantic.ValidationError) -> dict[str, Any]:
    details = [
        {"loc": list(err["loc"]), "msg": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return {
        "ok": False,
        "error": {
            "code": "validation_error",
            "message": "payload is not valid",
            "details": details,
        },
    }


class AuthenticatedNamespace(socketio.AsyncNamespace):
    """A namespace whose sockets are authenticated and placed in their tenant/user rooms."""

    def __init__(self, namespace: str, app: web.Application) -> None:
        super().__init__(namespace)
        self.app = app

    async def trigger_event(self, event: str, *args: Any) -> Any:
        handler = getattr(self, "on_" + event.replace(":", "_"), None)
        if handler is None:
            return None
        if event in LIFECYCLE_EVENTS:
            return await handler(*args)
        try:
            return await handler(*args)
        except HubError as exc:
            return exc.as_ack()
        except pydantic.ValidationError as exc:
            return validation_ack(exc)
        except Exception:
            log.exception("socket event %r failed", event)
            return {"ok": False, "error": {"code": "internal_error", "message": "internal error"}}

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        try:
            principal = await self.app[VERIFIER].verify(token_from_handshake(environ, auth))
        except AuthError as exc:
            raise unauthorized(str(exc)) from None
        await self.save_session(sid, {SESSION_PRINCIPAL: principal})
        await self.enter_room(sid, tenant_room(principal.tenant_id))
        await self.enter_room(sid, user_room(principal.tenant_id, principal.user_id))
        await self.after_connect(sid, principal, auth)

    async def after_connect(self, sid: str, principal: Principal, auth: object) -> None:
        """Namespace-specific work once the socket is authenticated (replay, presence...)."""

    async def principal(self, sid: str) -> Principal:
        session = await self.get_session(sid)
        principal: Principal = session[SESSION_PRINCIPAL]
        return principal
