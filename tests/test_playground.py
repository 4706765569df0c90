"""The playground page at ``/``: served with its assets, nothing from outside, and development
token minting only where it is allowed. The browser itself is tested in test_browser.py."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.pages import TEMPLATES_DIR
from api.playground import STATIC_DIR, setup_playground
from hub.app import CleanupContext, create_app
from hub.auth import TokenVerifier
from hub.settings import Settings
from tests.harness.tokens import TEST_JWT_SECRET, KeyPair

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
NPM_DIST = JS_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
VENDORED = STATIC_DIR / "socket.io.min.js"
PRODUCTION_SECRET = "production-secret-" + "x" * 40


def with_playground(
    settings: Settings, *, cleanup_contexts: list[CleanupContext] | None = None
) -> web.Application:
    """The hub app with the playground: as create_app wires it, else added here (which is
    also how a deployment that sets NOTIFYHUB_PLAYGROUND=true in production gets it)."""
    app = create_app(settings, cleanup_contexts=cleanup_contexts)
    if "playground" not in app.router.named_resources():
        setup_playground(app, settings)
    return app


async def serve(app: web.Application) -> tuple[str, web.AppRunner]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}", runner


PageServer = Callable[..., Awaitable[str]]


@pytest.fixture
async def page_server() -> AsyncIterator[PageServer]:
    """Serve the playground on settings built from keyword arguments, without databases:
    the page, its assets and token minting need none."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> str:
        values: dict[str, Any] = {"env": "test", "jwt_secret": TEST_JWT_SECRET, **overrides}
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        url, runner = await serve(with_playground(settings, cleanup_contexts=[]))
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


async def fetch(
    url: str, method: str = "GET", **kwargs: Any
) -> tuple[int, str, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as response:
        body = await response.read()
        return response.status, response.content_type, dict(response.headers), body


class AssetRefs(HTMLParser):
    """Every URL the page would load: script/img/iframe src, link href, and so on."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "action", "srcset", "poster", "data"} and value:
                self.refs.append((tag, name, value))


async def test_page_is_served_with_both_panels(page_server: PageServer) -> None:
    url = await page_server()
    status, content_type, headers, body = await fetch(url + "/")
    assert status == 200
    assert content_type == "text/html"
    html = body.decode()
    for testid in ("notifications-panel", "chat-panel", "unread-badge", "mint-form", "token-input"):
        assert f'data-testid="{testid}"' in html
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_page_loads_nothing_from_outside_the_hub(page_server: PageServer) -> None:
    url = await page_server()
    html = (await fetch(url + "/"))[3].decode()
    parser = AssetRefs()
    parser.feed(html)
    scripts = [value for tag, _, value in parser.refs if tag == "script"]
    assert any("socket.io.min.js" in src for src in scripts), scripts
    for tag, attribute, value in parser.refs:
        assert (value.startswith("/") and not value.startswith("//")) or value == "data:,", (
            f"<{tag} {attribute}={value!r}> is not served by the hub"
        )
    assert not re.search(r"https?://", html), "the page names an outside URL"
    for own in ("playground.js", "playground.css"):
        text = (STATIC_DIR / own).read_text()
        assert not re.search(r"https?://|@import|\bimport\s*\(", text), own

    # Every asset the page names is served, with a cache-busting version.
    for tag, attribute, value in parser.refs:
        if value == "data:,":
            continue
        assert "?v=" in value, value
        status, content_type, _, _ = await fetch(url + value)
        assert status == 200, (tag, attribute, value)
        assert content_type in {"text/css", "text/javascript", "application/javascript"}


async def test_static_files(page_server: PageServer) -> None:
    url = await page_server()
    status, _, _, body = await fetch(url + "/playground/static/socket.io.min.js")
    assert status == 200
    assert body == VENDORED.read_bytes()
    status, _, _, _ = await fetch(url + "/playground/static/nothing.js")
    assert status == 404
    # No way out of hub/static, and no directory listing.
    for path in ("/playground/static/../settings.py", "/playground/static/%2e%2e/settings.py"):
        status, _, _, body = await fetch(url + path)
        assert status in {403, 404}, path
        assert b"ConfigurationError" not in body
    status, _, _, _ = await fetch(url + "/playground/static/")
    assert status in {403, 404}


def test_vendored_socketio_client_is_the_pinned_npm_build() -> None:
    """hub/static/socket.io.min.js is byte for byte the dist file of the version pinned in
    tests/js: `bash scripts/vendor-socketio.sh` refreshes it after a version change."""
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["socket.io-client"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin socket.io-client to an exact version"
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/socket.io-client"]["version"] == pinned
    vendored = VENDORED.read_bytes()
    assert vendored.startswith(f"/*!\n * Socket.IO v{pinned}\n".encode()), (
        "the vendored file must keep its license header and match the pinned version"
    )
    assert "MIT License" in vendored[:200].decode()
    assert (STATIC_DIR / "socket.io-client.LICENSE").read_text().startswith("The MIT License")
    if not NPM_DIST.is_file():
        pytest.fail(
            f"{NPM_DIST} is missing: run `npm ci --prefix tests/js` (from the repository root).",
            pytrace=False,
        )
    installed = json.loads((NPM_DIST.parent.parent / "package.json").read_text())["version"]
    assert installed == pinned, "tests/js/node_modules is stale: run `npm ci --prefix tests/js`"
    assert vendored == NPM_DIST.read_bytes(), (
        "hub/static/socket.io.min.js differs from the npm package: run "
        "`bash scripts/vendor-socketio.sh`"
    )


async def mint(url: str, body: Any, path: str = "/playground/token") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(url + path, json=body) as response:
        return response.status, await response.json()


async def test_mint_token_for_any_user(page_server: PageServer) -> None:
    url = await page_server()
    status, body = await mint(url, {"tenant_id": " acme ", "user_id": "alice"})
    assert status == 200, body
    assert (body["tenant_id"], body["user_id"]) == ("acme", "alice")
    settings = Settings(_env_file=None, env="test", jwt_secret=TEST_JWT_SECRET)  # type: ignore[call-arg]
    principal = await TokenVerifier(settings).verify(body["token"])
    assert (principal.tenant_id, principal.user_id, principal.roles) == (
        "acme",
        "alice",
        frozenset(),
    )
    assert abs(principal.expires_at - body["expires_at"]) <= 2

    body = {"tenant_id": "acme", "user_id": "bob", "ttl_seconds": 60}
    status, body = await mint(url, body, path="/playground/token/")
    assert status == 200, body


@pytest.mark.parametrize(
    "payload",
    [
        {"tenant_id": "acme"},
        {"tenant_id": "", "user_id": "alice"},
        {"tenant_id": "acme", "user_id": "a" * 129},
        {"tenant_id": "acme", "user_id": "alice", "roles": ["service"]},
        {"tenant_id": "acme", "user_id": "alice", "ttl_seconds": 10**7},
        ["acme", "alice"],
    ],
)
async def test_mint_token_validates(page_server: PageServer, payload: Any) -> None:
    url = await page_server()
    status, body = await mint(url, payload)
    assert status == 400, body
    assert body["error"]["code"] in {"validation_error", "invalid_json"}


async def test_mint_token_needs_json(page_server: PageServer) -> None:
    url = await page_server()
    status, _, _, body = await fetch(
        url + "/playground/token", "POST", data={"tenant_id": "acme", "user_id": "alice"}
    )
    assert status == 415
    assert json.loads(body)["error"]["code"] == "unsupported_media_type"


async def test_no_minting_in_production(page_server: PageServer) -> None:
    # Production with the playground turned on explicitly: the page serves, minting never.
    url = await page_server(env="production", jwt_secret=PRODUCTION_SECRET, playground=True)
    status, body = await mint(url, {"tenant_id": "acme", "user_id": "alice"})
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert "production" in body["error"]["message"]
    assert "token" not in body
    html = (await fetch(url + "/"))[3].decode()
    assert 'data-testid="mint-form"' not in html
    assert 'data-testid="mint-disabled"' in html
    assert 'data-testid="token-input"' in html  # a pasted token still works


async def test_no_minting_without_an_hmac_algorithm(
    page_server: PageServer, rsa_keys: KeyPair
) -> None:
    url = await page_server(jwt_algorithms=["RS256"], jwt_public_key=rsa_keys.public_pem)
    status, body = await mint(url, {"tenant_id": "acme", "user_id": "alice"})
    assert status == 403
    assert "HMAC" in body["error"]["message"]


def test_playground_is_on_by_default_except_in_production() -> None:
    """The switch the app factory reads (``NOTIFYHUB_PLAYGROUND``; unset: on unless production)."""
    assert "playground" in Settings.model_fields, "Settings needs the `playground` field"

    def build(**values: Any) -> Settings:
        return Settings(_env_file=None, jwt_secret=PRODUCTION_SECRET, **values)  # type: ignore[call-arg]

    assert build(env="development").playground_enabled is True
    assert build(env="test").playground_enabled is True
    assert build(env="production").playground_enabled is False
    assert build(env="production", playground=True).playground_enabled is True
    assert build(env="development", playground=False).playground_enabled is False

    prod = create_app(build(env="production"), cleanup_contexts=[])
    assert "playground" not in prod.router.named_resources()
    dev = create_app(build(env="development"), cleanup_contexts=[])
    assert "playground" in dev.router.named_resources()
    off = create_app(build(env="development", playground=False), cleanup_contexts=[])
    assert "playground" not in off.router.named_resources()


def test_templates_and_static_files_ship_in_the_wheel() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    patterns = package_data.get("hub", [])
    for path in [*TEMPLATES_DIR.iterdir(), *STATIC_DIR.iterdir()]:
        relative = path.relative_to(TEMPLATES_DIR.parent).as_posix()
        assert any(Path(relative).match(pattern) for pattern in patterns), (
            f"{relative} is not in [tool.setuptools.package-data] hub"
        )
