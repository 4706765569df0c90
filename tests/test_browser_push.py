"""The playground's "Enable push": the browser subscribes with the hub's VAPID key and the
subscription reaches ``/api/devices/`` as a device of the connected user.

Chromium subscribes through Google's push service, which this closed network cannot
reach; the test stands in for ``PushManager.subscribe`` (recording the key it was given)
and checks everything around it: the page reads the key, registers its service worker,
and posts the subscription.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

from hub.vapid import b64url_decode
from tests.harness.api import ApiClient
from tests.harness.hub import SettingsFactory
from tests.harness.push import BrowserSubscription
from tests.test_browser import STEP_MS, browser  # noqa: F401 - the fixture
from tests.test_playground import serve, with_playground
from tests.test_push import VAPID

if TYPE_CHECKING:
    from playwright.async_api import Browser

SUBSCRIBE_STAND_IN = """
window.__subscribedWith = null;
PushManager.prototype.subscribe = async function (options) {
  window.__subscribedWith = Array.from(new Uint8Array(options.applicationServerKey));
  const subscription = %s;
  return { toJSON: () => subscription };
};
"""


async def test_enable_push_registers_this_browser_as_a_device(
    browser: Browser,  # noqa: F811 - the fixture imported above
    hub_settings: SettingsFactory,
) -> None:
    url, runner = await serve(with_playground(hub_settings(vapid_private_key=VAPID.private_key)))
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    subscription = BrowserSubscription("https://push.example.net/wp/playground").as_json()
    context = await browser.new_context()
    try:
        await context.add_init_script(SUBSCRIBE_STAND_IN % json.dumps(subscription))
        page = await context.new_page()
        await page.goto(url + "/")
        await page.get_by_test_id("mint-tenant").fill(tenant)
        await page.get_by_test_id("mint-user").fill("alice")
        await page.get_by_test_id("mint-button").click()
        await page.get_by_test_id("push-enable").click()
        status = page.get_by_test_id("push-status")
        await status.filter(has_text="Push is on").wait_for(timeout=STEP_MS)

        key = await page.evaluate("window.__subscribedWith")
        assert bytes(key) == b64url_decode(VAPID.public_key)
        workers = await page.evaluate(
            "navigator.serviceWorker.getRegistrations().then(rs => rs.map("
            "r => (r.installing || r.waiting || r.active).scriptURL))"
        )
        assert [w.rsplit("/", 1)[1] for w in workers] == ["sw.js"]
        _, devices = await ApiClient.for_user(url, tenant, "alice").get("/api/devices/")
        assert [d["kind"] for d in devices["items"]] == ["webpush"]
    finally:
        await context.close()
        await runner.cleanup()
