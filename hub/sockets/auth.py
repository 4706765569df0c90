"""Authentication of a Socket.IO connection, done once in ``on_connect``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import socketio

from hub.auth import AuthError, Principal, TokenVerifier, bearer_token
from hub.sockets.rooms import tenant_room, user_room

log = logging.getLogger(__name__)

SESSION_PRINCIPAL = "principal"


def unauthorized(message: str) -> socketio.exceptions.ConnectionRefusedError:
    """The refusal every client sees: message ``unauthorized``, data ``{code, message}``."""
    return socketio.exceptions.ConnectionRefusedError(
        "unauthorized", {"code": "unauthorized", "message": message}
    )


def token_from_handshake(environ: Mapping[str, Any], auth: object) -> str | None:
    """The token from the connect packet's ``auth`` object, else from an Authorization header.

    A token in the query string is deliberately ignored: URLs end up in proxy logs.
    """
    if isinstance(auth, Mapping):
        token = auth.get("token")
        if token is not None:
            return token if isinstance(token, str) else ""
    return bearer_token(environ.get("HTTP_AUTHORIZATION"))


class AuthenticatedNamespace(socketio.AsyncNamespace):
    """A namespace whose sockets are authenticated and placed in their tenant/user rooms."""

    def __init__(self, namespace: str, verifier: Callable[[], TokenVerifier]) -> None:
        super().__init__(namespace)
        # A callable, because the verifier is built when the app starts, after routing.
        self._verifier = verifier

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        try:
            principal = await self._verifier().verify(token_from_handshake(environ, auth))
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
