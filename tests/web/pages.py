"""Steps on the candidate page and the proctor console, shared by the web tests."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from api.runtime import Runtime
from infra.settings import Settings
from tests.support.factories import PASSWORD

SECONDS = 1000  # Playwright counts milliseconds
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Test instrumentation, run before the page's modules: keeps each peer connection the
# page makes, so a test can read its ICE statistics.
KEEP_PEERS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.testPeers = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.testPeers.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""
# The addresses of the selected ICE pair of every connected peer connection of a page.
SELECTED_PAIRS = """
async () => {
  const pairs = [];
  for (const pc of window.testPeers.filter((p) => p.connectionState === 'connected')) {
    const stats = [...(await pc.getStats()).values()];
    const byId = new Map(stats.map((s) => [s.id, s]));
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = byId.get(transport.selectedCandidatePairId);
    pairs.push([byId.get(pair.localCandidateId).address, byId.get(pair.remoteCandidateId).address]);
  }
  return pairs;
}
"""


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def new_page(browser: Browser, errors: list[str] | None, **options: Any) -> Page:
    """A page in a context of its own; its console errors (CSP refusals, say) go to `errors`."""
    context = await browser.new_context(locale="zh-CN", **options)
    await context.add_init_script(KEEP_PEERS)
    page = await context.new_page()
    if errors is not None:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"Uncaught {e}"))
    return page


async def open_candidate(
    browser: Browser,
    settings: Settings,
    exam: str,
    number: str,
    errors: list[str] | None = None,
    *,
    biometric: bool = True,
) -> Page:
    """Logged in, the policy accepted and (unless `biometric` is False) the separate consent
    to face checks given: the candidate at the device checks."""
    page = await log_in_candidate(browser, settings, exam, number, errors)
    await page.locator("#accept").check()
    if biometric and await page.locator("#biometric-choice").is_visible():
        await page.locator("#biometric-accept").check()
    await page.locator("#policy-form button").click()
    await expect(page.locator("#check-step")).to_be_visible()
    return page


async def pass_checks(page: Page) -> None:
    await check_devices(page)
    await page.locator("#join").click()
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=15 * SECONDS
    )


async def check_devices(page: Page) -> None:
    await page.select_option("#network", "cellular")
    await expect(page.locator("#cellular")).to_be_visible()
    await page.select_option("#network", "wifi")
    await expect(page.locator("#cellular")).to_be_hidden()
    await page.locator("#check").click()
    await expect(page.locator("#check-microphone")).to_have_attribute("data-ok", re.compile("."))
    assert await page.locator("#error").is_hidden(), await page.locator("#error").text_content()
    for check in ("#check-browser", "#check-camera", "#check-microphone"):
        await expect(page.locator(check)).to_have_attribute("data-ok", "true")


async def log_in_console(
    browser: Browser, settings: Settings, username: str, errors: list[str] | None = None
) -> Page:
    page = await new_page(browser, errors, viewport={"width": 1100, "height": 800})
    await page.goto(f"{settings.gateway_url}/console/")
    await page.get_by_label("用户名").fill(username)
    await page.get_by_label("密码").fill(PASSWORD)
    await page.locator("#login-form button").click()
    await expect(page.locator("#rooms-step")).to_be_visible()
    return page


async def open_console(
    browser: Browser, settings: Settings, username: str, room: str, errors: list[str] | None = None
) -> Page:
    page = await log_in_console(browser, settings, username, errors)
    await page.locator(f'button[data-room="{room}"]').click()
    await expect(page.locator("#room-step")).to_be_visible()
    return page


async def log_in_candidate(
    browser: Browser, settings: Settings, exam: str, number: str, errors: list[str] | None = None
) -> Page:
    page = await new_page(browser, errors)
    await page.goto(f"{settings.gateway_url}/candidate/")
    await page.get_by_label("考试编号").fill(exam)
    await page.get_by_label("考生号").fill(number)
    await page.locator("#login-form button").click()
    await expect(page.locator("#policy-step")).to_be_visible()
    return page


async def screenshot(page: Page, name: str) -> None:
    """A full-page picture in artifacts/, for people to look at (nothing compares them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / name, full_page=True)


async def screenshots_zh_en(page: Page, name: str, language_button: str = "#lang") -> None:
    """`name`-zh.png and `name`-en.png in artifacts/ (the page's language switched and back),
    copied to docs/screenshots/ when UPDATE_DOCS_SCREENSHOT=1: the issue's pictures of each
    page, taken by the tests that walk it."""
    await screenshot(page, f"{name}-zh.png")
    await page.locator(language_button).click()
    await screenshot(page, f"{name}-en.png")
    await page.locator(language_button).click()
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOTS.mkdir(exist_ok=True)
        for lang in ("zh", "en"):
            shutil.copyfile(
                ARTIFACTS / f"{name}-{lang}.png", DOCS_SCREENSHOTS / f"{name}-{lang}.png"
            )
