"""The playground in headless Chromium: two users of one tenant, notifications and chat.

Debian's Chromium (``apt-get install -y chromium chromium-driver``, which ``scripts/test``
does) driven by Playwright for Python: no browser download. Without Chromium this test fails
and says how to install it; it never skips.

Screenshots of both pages go to ``tests/artifacts/`` on every run; with
``UPDATE_SCREENSHOTS=1`` Alice's page is also saved as ``docs/playground.png`` (the README's).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness.api import ApiClient
from tests.harness.hub import SettingsFactory
from tests.test_playground import serve, with_playground

if TYPE_CHECKING:
    from playwright.async_api import Browser, Locator, Page

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "playground.png"

CHROMIUM = "/usr/bin/chromium"
# The flags the machine notes give for this sandbox: root needs --no-sandbox, and without the
# background-networking ones Chromium keeps dialing Google's hosts on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
INSTALL_CHROMIUM = "apt-get update && apt-get install -y chromium chromium-driver"
STEP_MS = 10_000  # every wait in the browser is bounded by this
VIEWPORT = {"width": 1280, "height": 800}


def chromium_installed() -> bool:
    return os.path.exists(CHROMIUM)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.fail(
            "Playwright for Python is missing: `.venv/bin/pip install -e '.[test]'` "
            "(never `playwright install`: the test drives Debian's Chromium).",
            pytrace=False,
        )
    if not chromium_installed():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `{INSTALL_CHROMIUM}` "
            "(scripts/test does this).",
            pytrace=False,
        )
    expect.set_options(timeout=STEP_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def playground_url(hub_settings: SettingsFactory) -> AsyncIterator[str]:
    """A hub on Postgres + Redis with the playground page."""
    # A short presence grace period, so the peer's dot goes grey within the test.
    url, runner = await serve(with_playground(hub_settings(presence_grace_seconds=1)))
    try:
        yield url
    finally:
        await runner.cleanup()


@dataclass
class UserPage:
    """One user's playground tab, in a browser context of its own."""

    name: str
    page: Page
    hub_url: str
    problems: list[str] = field(default_factory=list)

    def testid(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    async def sign_in(self, tenant: str) -> None:
        from playwright.async_api import expect

        await self.page.goto(self.hub_url + "/")
        await self.testid("mint-tenant").fill(tenant)
        await self.testid("mint-user").fill(self.name)
        await self.testid("mint-button").click()
        await self.wait_connected()
        await expect(self.testid("identity")).to_contain_text(f"{self.name} @ tenant {tenant}")

    async def wait_connected(self) -> None:
        from playwright.async_api import expect

        for status in ("notifications-status", "chat-status"):
            await expect(self.testid(status)).to_have_attribute("data-state", "connected")

    async def open_chat(self, peer: str) -> None:
        from playwright.async_api import expect

        await self.testid("peer-input").fill(peer)
        await self.testid("peer-open").click()
        await expect(self.testid("thread-title")).to_have_text(f"Chat with {peer}")

    async def send(self, text: str) -> None:
        await self.testid("composer-input").fill(text)
        await self.testid("send-button").click()

    def own_message_status(self, text: str) -> Locator:
        return self.own_message(text).get_by_test_id("message-status")

    def own_message(self, text: str) -> Locator:
        return self.page.locator('[data-testid="message"][data-from="me"]').filter(has_text=text)

    def message(self, text: str) -> Locator:
        return self.testid("message").filter(has_text=text)

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(path))


async def open_user(browser: Browser, hub_url: str, name: str) -> UserPage:
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = await context.new_page()
    page.set_default_timeout(STEP_MS)
    user = UserPage(name=name, page=page, hub_url=hub_url)
    page.on(
        "console",
        lambda message: (
            user.problems.append(f"console {message.type}: {message.text}")
            if message.type in {"error", "warning"}
            else None
        ),
    )
    page.on("pageerror", lambda error: user.problems.append(f"page error: {error}"))

    def outside(url: str) -> None:
        if not (url.startswith(hub_url + "/") or url.startswith(("data:", "about:"))):
            user.problems.append(f"request outside the hub: {url}")

    context.on("request", lambda request: outside(request.url))
    context.on(
        "requestfailed",
        lambda request: user.problems.append(f"request failed: {request.url} {request.failure}"),
    )
    return user


async def test_two_users_in_the_playground(
    playground_url: str, browser: Browser, tenant: str
) -> None:
    # (The hub is set up before the browser, so the browser closes its sockets first.)
    alice = await open_user(browser, playground_url, "alice")
    bob = await open_user(browser, playground_url, "bob")
    try:
        await scenario(playground_url, tenant, alice, bob)
    except BaseException:
        # Keep what each page looked like when it went wrong.
        for user in (alice, bob):
            with contextlib.suppress(Exception):
                await user.screenshot(ARTIFACTS / f"failed-{user.name}.png")
        raise


async def scenario(playground_url: str, tenant: str, alice: UserPage, bob: UserPage) -> None:
    """Notifications, chat, mark read, replay, seen, archive and delete, as two users would
    use the page."""
    from playwright.async_api import expect

    service = ApiClient.for_service(playground_url, tenant)
    # The tenant locks security emails on, before anyone signs in.
    status, _ = await service.request(
        "PUT", "/api/tenant/preferences/", json={"categories": {"security": {"locked": ["email"]}}}
    )
    assert status == 200
    await alice.sign_in(tenant)
    await bob.sign_in(tenant)

    # A notification created over REST appears live on Alice's page, unread, with its badge.
    await service.notify(
        ["alice"],
        title="Deal won: ACME renewal",
        body="Bob closed the ACME renewal (3 years, 48 seats).",
        category="deals",
        link="/deals/42",
    )
    items = alice.testid("notification-item")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("Deal won: ACME renewal")
    await expect(items.first).to_have_attribute("data-unread", "true")
    await expect(alice.testid("unread-badge")).to_have_text("1")
    await service.notify(
        ["alice"], title="Invoice #1042 is overdue", body="Due 3 days ago.", category="billing"
    )
    await expect(items).to_have_count(2)
    await expect(items.first).to_contain_text("Invoice #1042")  # newest first
    await expect(alice.testid("unread-badge")).to_have_text("2")
    await expect(bob.testid("notification-item")).to_have_count(0)
    await expect(bob.testid("unread-badge")).to_have_text("0")

    await preferences_panel(playground_url, tenant, alice)

    # Bob writes to Alice: the message appears on her page and, as she sees it, he gets "Read".
    await alice.open_chat("bob")
    await bob.open_chat("alice")
    await bob.send("Hi Alice! Do you have a minute for the ACME contract?")
    await expect(alice.message("Do you have a minute")).to_have_count(1)
    await expect(alice.message("Do you have a minute")).to_have_attribute("data-from", "peer")
    await expect(bob.own_message_status("Do you have a minute")).to_have_text(re.compile("Read"))

    # Typing: Alice sees Bob typing, then his message, and the indicator goes away.
    await bob.testid("composer-input").press_sequentially("Call at 3 pm?", delay=15)
    await expect(alice.testid("typing-indicator")).to_be_visible()
    await expect(alice.testid("typing-indicator")).to_have_text("bob is typing…")
    await bob.testid("send-button").click()
    await expect(alice.message("Call at 3 pm?")).to_have_count(1)
    await expect(alice.testid("typing-indicator")).to_be_hidden()
    await expect(bob.own_message_status("Call at 3 pm?")).to_have_text(re.compile("Read"))

    # And back: Alice answers, Bob reads it, Alice gets "Read".
    await alice.send("Sure, 3 pm works. I'll send an invite.")
    await expect(bob.message("3 pm works")).to_have_count(1)
    await expect(alice.own_message_status("3 pm works")).to_have_text(re.compile("Read"))
    await expect(alice.testid("conversation-item").filter(has_text="bob")).to_have_count(1)

    # Presence: each sees the other online (asked when the chat opened, then kept by events).
    await expect(alice.testid("peer-presence")).to_have_attribute("data-status", "online")
    await expect(bob.testid("peer-presence")).to_have_text("online")

    # Alice corrects her message: Bob's page shows the new text, marked edited.
    await alice.own_message("I'll send an invite").get_by_test_id("message-edit").click()
    await expect(alice.testid("composer-input")).to_have_value(
        "Sure, 3 pm works. I'll send an invite."
    )
    await alice.testid("composer-input").fill("Sure, 3 pm works. Invite sent.")
    await alice.testid("send-button").click()
    await expect(bob.message("Invite sent.")).to_have_count(1)
    await expect(bob.message("Invite sent.").get_by_test_id("message-edited")).to_have_count(1)
    await expect(bob.message("I'll send an invite")).to_have_count(0)
    # Bob takes a message back: a tombstone on both pages.
    await bob.send("Oops, wrong chat")
    await expect(alice.message("Oops, wrong chat")).to_have_count(1)
    await bob.own_message("Oops, wrong chat").get_by_test_id("message-delete").click()
    await expect(alice.message("Oops, wrong chat")).to_have_count(0)
    await expect(alice.message("Message deleted")).to_have_count(1)
    await expect(bob.message("Message deleted")).to_have_count(1)

    # Bob starts another message: the screenshots show every part at work.
    await bob.testid("composer-input").press_sequentially("Great, see you", delay=15)
    await expect(alice.testid("typing-indicator")).to_be_visible()
    await alice.screenshot(ARTIFACTS / "playground-alice.png")
    await bob.screenshot(ARTIFACTS / "playground-bob.png")
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        await alice.screenshot(DOCS_SCREENSHOT)
    # Clearing the draft ends typing at once.
    await bob.testid("composer-input").fill("")
    await expect(alice.testid("typing-indicator")).to_be_hidden()

    # Mark read: one item, then all; the badge follows (Bob's page is untouched).
    await items.filter(has_text="Invoice #1042").get_by_test_id("mark-read").click()
    await expect(alice.testid("unread-badge")).to_have_text("1")
    await expect(items.filter(has_text="Invoice #1042")).to_have_attribute("data-unread", "false")
    await alice.testid("mark-all").click()
    await expect(alice.testid("unread-badge")).to_have_text("0")
    await expect(
        alice.page.locator('[data-testid="notification-item"][data-unread="true"]')
    ).to_have_count(0)

    # Replay: Alice leaves the page, a notification arrives, she comes back to the same tab;
    # it is replayed from her last seen seq (kept in localStorage) and counted unread.
    await alice.page.goto("about:blank")
    await service.notify(["alice"], title="Meeting moved to 4 pm", body="Room 2.")
    await alice.page.goto(playground_url + "/")
    await alice.wait_connected()
    await expect(items).to_have_count(3)
    await expect(items.first).to_contain_text("Meeting moved to 4 pm")
    await expect(items.first).to_have_attribute("data-unread", "true")
    await expect(alice.testid("unread-badge")).to_have_text("1")
    log = alice.testid("event-log").locator("li")
    await expect(log.filter(has_text="auth.last_seq 2")).to_have_count(1)
    await expect(
        log.filter(has_text="notification:new").filter(has_text="Meeting moved")
    ).to_have_count(1)
    # The reopened page is back in the conversation, with its history.
    await expect(alice.message("Call at 3 pm?")).to_have_count(1)
    await expect(alice.own_message_status("3 pm works")).to_have_text(re.compile("Read"))
    await alice.screenshot(ARTIFACTS / "playground-alice-after-reload.png")

    # Seen vs read, archive and delete: each change comes back as notification:updated.
    meeting = items.filter(has_text="Meeting moved")
    await expect(alice.testid("unseen-badge")).to_have_text("1")
    await expect(meeting).to_have_attribute("data-unseen", "true")
    await meeting.get_by_test_id("mark-seen").click()
    await expect(meeting).to_have_attribute("data-unseen", "false")
    await expect(alice.testid("unseen-badge")).to_have_text("0")
    await expect(alice.testid("unread-badge")).to_have_text("1")  # seen, still unread
    await items.filter(has_text="Deal won").get_by_test_id("archive").click()
    await expect(items).to_have_count(2)
    await items.filter(has_text="Invoice #1042").get_by_test_id("delete").click()
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("Meeting moved")
    await expect(log.filter(has_text="notification:updated")).to_have_count(4)  # + replay end
    archived = await ApiClient.for_user(playground_url, tenant, "alice").get(
        "/api/notifications/", archived="true"
    )
    assert [item["title"] for item in archived[1]["items"]] == ["Deal won: ACME renewal"]

    # Bob leaves: after the grace period Alice's page shows him offline, with when.
    await expect(alice.testid("peer-presence")).to_have_attribute("data-status", "online")
    await bob.page.goto("about:blank")
    await expect(alice.testid("peer-presence")).to_have_attribute("data-status", "offline")
    await expect(alice.testid("peer-presence")).to_have_text(re.compile("last seen"))

    assert alice.problems == [], alice.problems
    assert bob.problems == [], bob.problems


async def preferences_panel(playground_url: str, tenant: str, alice: UserPage) -> None:
    """The panel shows the channels, every category seen so far and the tenant's lock; Save
    PATCHes what was changed; a change from elsewhere arrives as preferences:updated."""
    from playwright.async_api import expect

    await expect(alice.testid("preferences-status")).to_have_text("up to date")
    for channel in ("in_app", "email", "push"):
        await expect(alice.testid(f"channel-{channel}")).to_be_checked()
    rows = alice.testid("category-row")
    # billing and deals from the notifications, security from the tenant's lock; in order.
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0)).to_have_attribute("data-category", "billing")
    await expect(rows.nth(2)).to_have_attribute("data-category", "security")
    locked = rows.filter(has_text="security").get_by_test_id("category-email")
    await expect(locked).to_be_checked()
    await expect(locked).to_be_disabled()

    await rows.filter(has_text="deals").get_by_test_id("category-email").uncheck()
    await alice.testid("channel-push").uncheck()
    await alice.testid("quiet-enabled").check()
    await alice.testid("quiet-start").fill("22:00")
    await alice.testid("quiet-end").fill("07:30")
    await alice.testid("quiet-timezone").fill("Europe/Paris")
    await alice.testid("preferences-save").click()
    log = alice.testid("event-log").locator("li")
    # Logged when the PATCH answered (its preferences:updated may come before or after).
    await expect(log.filter(has_text="preferences saved")).to_have_count(1)
    own = ApiClient.for_user(playground_url, tenant, "alice")
    assert await own.get("/api/preferences/") == (
        200,
        {
            "channels": {"in_app": True, "email": True, "push": False},
            "categories": {
                "deals": {"email": False},
                "security": {"email": True, "locked": ["email"]},
            },
            "quiet_hours": {"start": "22:00", "end": "07:30", "timezone": "Europe/Paris"},
        },
    )
    await expect(rows.filter(has_text="deals").get_by_test_id("category-push")).not_to_be_checked()

    # Another device of Alice's changes them: the panel follows.
    status, _ = await own.request(
        "PATCH", "/api/preferences/", json={"categories": {"billing": {"in_app": False}}}
    )
    assert status == 200
    billing = rows.filter(has_text="billing").get_by_test_id("category-in_app")
    await expect(billing).not_to_be_checked()
    await expect(alice.testid("preferences-status")).to_have_text("up to date")
    await expect(log.filter(has_text="preferences:updated")).to_have_count(2)
    await alice.testid("preferences-panel").scroll_into_view_if_needed()
    await alice.screenshot(ARTIFACTS / "playground-preferences.png")
