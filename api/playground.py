"""The developer playground at ``/``: a notification center and a 1-on-1 chat in the browser.

The page is plain HTML, CSS and JavaScript from ``hub/templates`` and ``hub/static`` (no
build step). Its Socket.IO client is ``hub/static/socket.io.min.js``, the official
``socket.io-client`` copied from npm by ``scripts/vendor-socketio.sh``: nothing is loaded
from the internet, so the page works offline and on CI.

``POST /playground/token`` mints a development token with the hub's HMAC secret, so a
developer can act as any user of any tenant. It answers only outside production; the
page also takes a pasted token, which is the only way in production (where the whole
playground is off unless ``NOTIFYHUB_PLAYGROUND=true``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import aiohttp_jinja2
import jinja2
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

import hub
from api.errors import ApiError, json_response
from api.pages import setup_templates
from api.payloads import read_body
from hub.auth import mint_token
from hub.settings import HMAC_ALGORITHMS, Settings

HUB_DIR = Path(hub.__file__).resolve().parent
STATIC_DIR = HUB_DIR / "static"

PAGE_PATH = "/"
MINT_PATH = "/playground/token"
STATIC_PREFIX = "/playground/static/"
STATIC_ROUTE = "playground-static"

DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 24 * 3600

# Everything the page loads comes from the hub itself; sockets go to the same origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

TenantId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
UserId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]


class MintTokenIn(BaseModel):
    """``POST /playground/token`` body: whom the development token is for."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: TenantId
    user_id: UserId
    ttl_seconds: int = Field(default=DEFAULT_TTL_SECONDS, ge=60, le=MAX_TTL_SECONDS)


def minting_refusal(settings: Settings) -> str | None:
    """Why this hub mints no development tokens, or None when it does."""
    if settings.is_production:
        return "Token minting is off in production: paste a token from your identity provider."
    if not any(alg in HMAC_ALGORITHMS for alg in settings.jwt_algorithms):
        return (
            "Token minting needs an HMAC algorithm in NOTIFYHUB_JWT_ALGORITHMS: "
            "paste a token instead."
        )
    return None


@dataclass(frozen=True)
class Playground:
    """The page and token views, bound to the hub's settings and asset URLs."""

    settings: Settings
    jinja_key: web.AppKey[jinja2.Environment]
    assets: dict[str, str]

    async def page(self, request: web.Request) -> web.StreamResponse:
        refusal = minting_refusal(self.settings)
        context = {
            "assets": self.assets,
            "env": self.settings.env,
            "mint_enabled": refusal is None,
            "mint_refusal": refusal or "",
            "chat_body_max_chars": self.settings.chat_body_max_chars,
        }
        response = aiohttp_jinja2.render_template(
            "playground.html", request, context, app_key=self.jinja_key
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    async def mint(self, request: web.Request) -> web.StreamResponse:
        refusal = minting_refusal(self.settings)
        if refusal is not None:
            raise ApiError(403, "forbidden", refusal)
        # JSON only: a cross-site HTML form cannot send it without a CORS preflight.
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send a JSON body")
        wanted = await read_body(request, MintTokenIn)
        token = mint_token(
            self.settings,
            tenant_id=wanted.tenant_id,
            user_id=wanted.user_id,
            ttl_seconds=wanted.ttl_seconds,
        )
        return json_response(
            {
                "token": token,
                "tenant_id": wanted.tenant_id,
                "user_id": wanted.user_id,
                "expires_at": int(time.time()) + wanted.ttl_seconds,
            },
            headers={"Cache-Control": "no-store"},
        )


PLAYGROUND_JINJA = web.AppKey("playground_jinja", jinja2.Environment)


def setup_playground(app: web.Application, settings: Settings) -> None:
    """Serve the playground page at ``/``, its assets and the development token endpoint.

    Call before the app starts, and only when the playground is enabled.
    """
    setup_templates(app, PLAYGROUND_JINJA)
    static = app.router.add_static(STATIC_PREFIX, STATIC_DIR, name=STATIC_ROUTE)
    if not isinstance(static, web.StaticResource):  # pragma: no cover - aiohttp's contract
        raise TypeError("add_static returned no StaticResource")
    assets = {
        key: str(static.url_for(filename=name, append_version=True))
        for key, name in (
            ("css", "playground.css"),
            ("js", "playground.js"),
            ("preferences", "preferences.js"),
            ("socketio", "socket.io.min.js"),
            ("push", "push.js"),
        )
    }
    # Unversioned: a service worker's URL is its identity for the browser.
    assets["worker"] = str(static.url_for(filename="sw.js"))
    playground = Playground(settings=settings, jinja_key=PLAYGROUND_JINJA, assets=assets)
    app.router.add_get(PAGE_PATH, playground.page, name="playground")
    app.router.add_post(MINT_PATH, playground.mint, name="playground-token")
    app.router.add_post(MINT_PATH + "/", playground.mint)
