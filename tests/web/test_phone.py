"""Issue #25, item 4: the phone page's refusals, in a real Chromium (its publishing journey,
from the candidate page's QR link to the proctor's tile, is in test_candidate_page.py).

A link without its pairing code says so and offers nothing to start; a code the gateway
does not know (expired, or revoked by a newer QR code) fails with the gateway's reason,
and the camera it opened is stopped again. The page keeps the token to its fragment:
no request of the page carries it in a URL.
"""

from __future__ import annotations

from playwright.async_api import Browser, Request, expect

from infra.settings import Settings
from tests.web.pages import new_page, screenshots_zh_en


async def test_the_phone_page_without_a_valid_pairing(browser: Browser, settings: Settings) -> None:
    errors: list[str] = []
    page = await new_page(browser, errors, viewport={"width": 390, "height": 844})
    urls: list[str] = []

    def seen(request: Request) -> None:
        urls.append(request.url)

    page.on("request", seen)
    try:
        await page.goto(f"{settings.gateway_url}/phone/")
        await expect(page.locator("#no-token")).to_be_visible()
        await expect(page.locator("#start")).to_be_disabled()

        token = "not-a-pairing-token-0123456789abcdef"
        await page.goto(f"{settings.gateway_url}/phone/#token={token}")
        await page.reload()  # a fragment change alone does not load the page again
        await expect(page.locator("#no-token")).to_be_hidden()
        await page.locator("#start").click()
        await expect(page.locator("#state")).to_have_attribute("data-state", "failed")
        await expect(page.locator("#error")).to_contain_text("invalid_pairing")
        await expect(page.locator("#stop")).to_be_hidden()
        live = await page.evaluate("window.testPeers.filter((p) => p.connectionState !== 'closed')")
        assert live == []
        await screenshots_zh_en(page, "phone-failed")
        assert not [u for u in urls if token in u], urls
        assert not [e for e in errors if "Content Security Policy" in e], errors
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        await page.context.close()
