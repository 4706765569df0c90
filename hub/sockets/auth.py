"""The base of every namespace: authentication once in ``on_connect``, thin event handlers.

Events named ``a:b`` are dispatched to ``on_a_b`` methods. A handler's return value is the
ack; a :class:`HubError` or invalid payload becomes ``{"ok": false, "error": {...}}`` and
anything unexpected is logged and answered with ``internal_error``: one client's bad input
never disconnects it or anybody else.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
import socketio
from aiohttp import web

from db.outage import is_unavailable
from hub.auth import AuthError, Principal, bearer_token
from hub.errors import DatabaseUnavailable, HubError
from hub.keys import SETTINGS, VERIFIER
from hub.logs import bind_caller, unbind
from hub.metrics import SOCKETS_CONNECTED
from hub.rooms import tenant_room, user_room
from hub.schemas import AuthRefreshIn

log = logging.getLogger(__name__)

LIFECYCLE_EVENTS = frozenset({"connect", "disconnect"})


def refused(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
    """A connect refusal: the client sees ``err.message == code`` and ``err.data``."""
    return socketio.exceptions.ConnectionRefusedError(code, {"code": code, "message": message})


def gone() -> socketio.exceptions.ConnectionRefusedError:
    """For a socket that disconnected while its CONNECT was being handled."""
    return refused("gone", "the connection closed while connecting")


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


class Deadlines:
    """When each socket's token expires, on one timer for all of them (a timer per socket
    costs ~600 bytes): a heap of ``(when, sid)`` and the current deadline of each sid. An entry
    whose deadline moved (``auth:refresh``) or whose socket left is skipped when it comes up;
    the heap is rebuilt once such entries outnumber the live ones."""

    __slots__ = ("_at", "_expire", "_heap", "_timer", "_timer_at")

    def __init__(self, expire: Callable[[str], None]) -> None:
        self._expire = expire
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def set(self, sid: str, when: float) -> None:
        """Expire ``sid`` at ``when`` (wall clock), instead of any earlier deadline."""
        self._at[sid] = when
        heapq.heappush(self._heap, (when, sid))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(at, key) for key, at in self._at.items()]
            heapq.heapify(self._heap)
        self._arm()

    def discard(self, sid: str) -> bool:
        """Forget ``sid``; False if it had no deadline (never authenticated)."""
        return self._at.pop(sid, None) is not None

    def _arm(self) -> None:
        if not self._heap:
            return
        when = self._heap[0][0]
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_at(loop.time() + max(0.0, when - time.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = time.time()
        heap, at = self._heap, self._at
        while heap and heap[0][0] <= now:
            when, sid = heapq.heappop(heap)
            if at.get(sid) == when:
                # Stays in ``_at`` until the disconnect handler discards it.
                self._expire(sid)
        self._arm()


class AuthenticatedNamespace(socketio.AsyncNamespace):
    """A namespace whose sockets are authenticated, and disconnected when their token
    expires unless they sent ``auth:refresh`` with a new one for the same tenant and user."""

    # Namespaces whose events go through Socket.IO rooms; /notifications delivers through
    # its own registry and saves the room bookkeeping per socket.
    uses_rooms = True

    def __init__(self, namespace: str, app: web.Application) -> None:
        super().__init__(namespace)
        self.app = app
        self._expiry = Deadlines(self._expired)
        self._principals: dict[str, Principal] = {}

    async def trigger_event(self, event: str, *args: Any) -> Any:
        handler = getattr(self, "on_" + event.replace(":", "_"), None)
        if handler is None:
            return None
        if event in LIFECYCLE_EVENTS:
            return await handler(*args)
        principal = self._principals.get(args[0])
        bound = bind_caller(principal.tenant_id, principal.user_id) if principal else None
        try:
            return await handler(*args)
        except HubError as exc:
            return exc.as_ack()
        except pydantic.ValidationError as exc:
            return validation_ack(exc)
        except Exception as exc:
            return self.failure_ack(event, exc)
        finally:
            if bound is not None:
                unbind(bound)

    def failure_ack(self, event: str, exc: Exception) -> dict[str, Any]:
        """The ack for a failure no handler raised on purpose: an outage or a bug."""
        if is_unavailable(exc):  # logged once per outage by db.outage, not per event
            retry_after = self.app[SETTINGS].unavailable_retry_after_seconds
            return DatabaseUnavailable(retry_after).as_ack()
        log.exception("socket event %r failed", event)
        return {"ok": False, "error": {"code": "internal_error", "message": "internal error"}}

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        try:
            principal = await self.app[VERIFIER].verify(token_from_handshake(environ, auth))
        except AuthError as exc:
            raise unauthorized(str(exc)) from None
        # Each socket's principal, in a dict of the namespace rather than python-socketio's
        # session (two dicts per socket).
        self._principals[sid] = principal
        try:
            if self.uses_rooms:
                await self.enter_room(sid, tenant_room(principal.tenant_id))
                await self.enter_room(sid, user_room(principal.tenant_id, principal.user_id))
            await self.after_connect(sid, principal, auth)
        except BaseException:
            del self._principals[sid]
            raise
        self._expiry.set(sid, principal.expires_at)
        SOCKETS_CONNECTED.labels(self.namespace).inc()

    async def after_connect(self, sid: str, principal: Principal, auth: object) -> None:
        """Namespace-specific work once the socket is authenticated (replay, presence...)."""

    def still_open(self, sid: str) -> bool:
        """Whether the socket is still there after ``after_connect`` awaited something: one
        that went away meanwhile gets no ``after_disconnect`` (it never finished connecting),
        so ``after_connect`` undoes its own work and refuses it (:func:`gone`)."""
        return sid in self.server.manager.rooms.get(self.namespace, {}).get(None, {})

    async def on_disconnect(self, sid: str, *_reason: Any) -> None:
        if not self._expiry.discard(sid):
            return  # never authenticated
        SOCKETS_CONNECTED.labels(self.namespace).dec()
        try:
            await self.after_disconnect(sid)
        finally:
            del self._principals[sid]

    async def after_disconnect(self, sid: str) -> None:
        """Namespace-specific cleanup (:meth:`principal` still answers here)."""

    async def on_auth_refresh(self, sid: str, payload: object = None) -> dict[str, Any]:
        """``auth:refresh`` ``{"token"}``: a new token for the same tenant and user."""
        try:
            token = AuthRefreshIn.model_validate(payload).token
        except pydantic.ValidationError:
            # One message for every misshapen payload: the client only ever sends a token.
            raise HubError('payload must be {"token": "<jwt>"}', code="validation_error") from None
        try:
            fresh = await self.app[VERIFIER].verify(token)
        except AuthError as exc:
            raise HubError(str(exc), code="unauthorized", status=401) from None
        current = await self.principal(sid)
        if (fresh.tenant_id, fresh.user_id) != (current.tenant_id, current.user_id):
            raise HubError(
                "the new token is for another tenant or user", code="forbidden", status=403
            )
        self._principals[sid] = fresh
        self._expiry.set(sid, fresh.expires_at)
        return {"ok": True, "expires_at": int(fresh.expires_at)}

    def _expired(self, sid: str) -> None:
        log.info("socket %s disconnected: token expired", sid)
        task = asyncio.ensure_future(self.disconnect(sid))
        task.add_done_callback(lambda done: done.exception())

    async def principal(self, sid: str) -> Principal:
        return self._principals[sid]
