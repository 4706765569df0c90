"""``/api/unsubscribe/?token=...``: the one-click unsubscribe link of emails (RFC 8058).

Public: the signed token is the authority (see :mod:`hub.services.unsubscribe`). ``GET``
only shows a confirmation page, since mail scanners and link previews fetch every link in
a message; ``POST`` (the mail provider's one-click request, or the page's button) turns
the category's email off.
"""

from __future__ import annotations

import aiohttp_jinja2
import jinja2
from aiohttp import web

from api.errors import json_response
from api.pages import setup_templates
from hub.errors import InvalidInput
from hub.keys import PREFERENCES
from hub.responses import Unsubscribed
from hub.services import unsubscribe

PAGES_JINJA = web.AppKey("pages_jinja", jinja2.Environment)
TEMPLATE = "unsubscribe.html"

# The pages run no script and load nothing; the form may only post back here.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Cache-Control": "no-store",
}


def setup_pages(app: web.Application) -> None:
    """The template environment of the unsubscribe pages (always served, production too)."""
    setup_templates(app, PAGES_JINJA)


def _token(request: web.Request) -> str:
    token = request.query.get("token")
    if not token:
        raise InvalidInput("the 'token' query parameter is required")
    return token


def _page(request: web.Request, context: dict[str, object]) -> web.Response:
    response = aiohttp_jinja2.render_template(TEMPLATE, request, context, app_key=PAGES_JINJA)
    response.headers.update(PAGE_HEADERS)
    return response


async def confirm_page(request: web.Request) -> web.Response:
    token = _token(request)
    target = unsubscribe.verify(request.app[PREFERENCES].unsubscribe_key, token)
    action = unsubscribe.link("", token)  # same origin: the page's form posts back here
    return _page(request, {"category": target.category, "action": action, "done": False})


async def unsubscribe_now(request: web.Request) -> web.Response:
    target = await request.app[PREFERENCES].unsubscribe(_token(request))
    # A person who pressed the page's button gets a page; a mail provider's one-click POST
    # (and any API client) gets JSON, of which only the status matters to it.
    if "text/html" in request.headers.get("Accept", ""):
        return _page(request, {"category": target.category, "action": "", "done": True})
    return json_response(Unsubscribed(unsubscribed=True, category=target.category).model_dump())
