"""Issue #25, items 4 and 5, in a real Chromium: the candidate's page as one journey.

A candidate whose browser says it is on a mobile network (navigator.connection,
overridden before the page loads) is asked "continue on mobile data?" before any
video is sent, and measures the round trip to the gateway, then (once mobile data is
accepted) the link to the media shard on a short probe session; once live, the page
measures the media link (round trip, sending rate), and publishes its camera again when
the room is told to reconnect (a media drain). The candidate reaches the main
controls by keyboard, raises a hand and messages the proctor (journaled in the room),
reads the proctor's answer in the live region, uploads a whiteboard (and is told why a
text file is refused), shows the side camera's QR code; a phone (a second browser
context) opens the link and publishes the side camera, which the proctor's tile shows.
Logging out ends the media and goes back to the login form.
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import httpx
from fastapi import FastAPI
from PIL import Image
from playwright.async_api import Browser, FilePayload, Page, Route, expect

from core import keys, room_text
from infra.settings import Settings
from tests.support.factories import new_exam
from tests.support.journal import room_journal
from tests.support.wait import until
from tests.web.pages import (
    SECONDS,
    new_page,
    open_console,
    runtime_of,
    screenshots_zh_en,
)

# A phone's browser on mobile data, as the Network Information API describes it.
CELLULAR = """
(() => {
  const connection = new EventTarget();
  Object.assign(connection, { type: 'cellular', effectiveType: '4g', downlink: 3.5, rtt: 80 });
  Object.defineProperty(Navigator.prototype, 'connection', { get: () => connection });
})();
"""
# The page's main controls in the order Tab reaches them, and the names a screen reader says.
LIVE_CONTROLS = {
    "rights-link": "My data and rights",
    "logout": "Log out",
    "raise-hand": "Raise hand",
    "help-text": "Message to the proctor",
    "help-send": "Send message",
    "whiteboard": "Choose a whiteboard image",
    "pair": "Show QR code",
}


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 200, 190)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _help_events(app: FastAPI, exam: str) -> list[dict[str, Any]]:
    """The room's help events, their text opened with the exam's key: journaled sealed."""
    runtime = runtime_of(app)
    journal = await room_journal(runtime.redis, keys.room_key(exam, "r1"))
    found = [event for _, event in journal if event["type"].startswith("help")]
    assert not [event for event in found if event.get("text")]  # none in clear at rest
    return [await room_text.opened(runtime.exams.keys, exam, event) for event in found]


async def _tab_order(page: Page, presses: int) -> list[str]:
    await page.evaluate("document.activeElement && document.activeElement.blur()")
    await page.locator("header h1").click()  # start from the top of the page
    order: list[str] = []
    for _ in range(presses):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.id")
        if order and focused == order[0]:
            break  # round the page once: Tab came back to the top
        order.append(focused)
    return order


async def test_candidate_page_journey(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5001"]})
    exam, cid = world.exam_id, world.candidate_ids["5001"]
    errors: list[str] = []
    page = await new_page(browser, errors)
    await page.context.add_init_script(CELLULAR)
    phone: Page | None = None
    console: Page | None = None
    try:
        await page.goto(f"{settings.gateway_url}/candidate/")
        await page.get_by_label("考试编号").fill(exam)
        await page.get_by_label("考生号").fill("5001")
        await page.locator("#login-form button").click()
        await page.locator("#accept").check()
        await page.locator("#policy-form button").click()

        # Mobile data, as the browser says (no drop-down to fill in): asked before video.
        await expect(page.locator("#network-ask")).to_be_hidden()
        await page.locator("#check").click()
        await expect(page.locator("#check-camera")).to_have_attribute("data-ok", "true")
        await expect(page.locator("#net-detected")).to_have_attribute("data-type", "cellular")
        await expect(page.locator("#net-downlink")).to_have_text("3.5 Mbit/s")
        await expect(page.locator("#check-rtt")).to_have_attribute("data-ms", re.compile(r"^\d+$"))
        await expect(page.locator("#cellular")).to_be_visible()
        await expect(page.locator("#join")).to_be_disabled()
        assert await page.evaluate("window.testPeers.length") == 0, "video before the answer"
        await expect(page.locator("#check-probe")).to_have_attribute("data-state", "waiting")
        await screenshots_zh_en(page, "candidate-mobile-data")
        await page.locator("#mobile-continue").click()
        await expect(page.locator("#join")).to_be_enabled()
        await expect(page.locator("#join")).to_be_focused()
        # The probe: a few seconds to the media shard, its round trip, rate and verdict.
        probe = page.locator("#check-probe")
        await expect(probe).to_have_attribute(
            "data-kbps", re.compile(r"^[1-9]\d*$"), timeout=15 * SECONDS
        )
        await expect(probe).to_have_attribute("data-rtt", re.compile(r"^\d+$"))
        await expect(probe).to_have_attribute("data-verdict", re.compile("^(good|weak|too_weak)$"))
        await expect(probe).to_contain_text("kbit/s")
        await expect(page.locator("#join")).to_be_focused()
        await page.keyboard.press("Enter")
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=15 * SECONDS
        )

        # The main controls, by keyboard, with their names (in English).
        await page.locator("#lang").click()
        order = await _tab_order(page, 24)
        reached = [i for i in order if i in LIVE_CONTROLS]
        assert reached == list(LIVE_CONTROLS), order
        for element, name in LIVE_CONTROLS.items():
            await expect(page.locator(f"#{element}")).to_have_accessible_name(name)
        await expect(page.locator("#messages")).to_have_attribute("aria-live", "polite")
        await expect(page.locator("#help-status")).to_have_attribute("aria-live", "polite")
        await page.locator("#lang").click()

        # A raised hand and a message reach the room's journal; the answer reaches the page.
        hand = page.locator("#raise-hand")
        await hand.focus()
        await page.keyboard.press("Enter")
        await expect(hand).to_have_attribute("aria-pressed", "true")
        await page.locator("#help-text").fill("我的计算器没电了")
        await page.locator("#help-send").click()
        await expect(page.locator("#help-status")).to_have_attribute("data-i18n", "cand_help_sent")
        assert [(e["type"], e["kind"], e["text"]) for e in await _help_events(app, exam)] == [
            ("help", "hand", None),
            ("help", "message", "我的计算器没电了"),
        ]
        assert all(e["cid"] == cid for e in await _help_events(app, exam))
        answer = await client.post(
            f"/v1/exams/{exam}/rooms/r1/messages",
            json={"to": cid, "text": "备用计算器马上送到"},
            headers=world.proctors["r1"],
        )
        assert answer.status_code == 201, answer.text
        await expect(page.locator("#messages li")).to_have_text(
            ["备用计算器马上送到"], timeout=15 * SECONDS
        )

        # Uploads: a whiteboard photo, and a text file refused with the reason said.
        board: FilePayload = {"name": "board.png", "mimeType": "image/png", "buffer": png()}
        await page.set_input_files("#whiteboard", files=[board])
        await page.locator("#whiteboard-form button").click()
        await expect(page.locator("#whiteboard-result")).to_have_attribute("data-done", "true")
        uploads = await client.get(
            f"/v1/exams/{exam}/rooms/r1/uploads", headers=world.proctors["r1"]
        )
        assert [u["data_class"] for u in uploads.json()["uploads"]] == ["whiteboards"]
        text: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}
        await page.set_input_files("#photo", files=[text])
        await page.locator("#photo-form button").click()
        await expect(page.locator("#photo-result")).to_have_attribute("data-state", "failed")
        await expect(page.locator("#photo-result")).to_have_attribute(
            "data-i18n", "cand_upload_type"
        )

        # The side camera: the QR code and its link; a phone opens the link and publishes.
        await page.locator("#pair").click()
        qr = page.locator("#pair-qr")
        await expect(qr).to_have_attribute("src", re.compile("^data:image/svg"))
        link = await page.locator("#pair-link").text_content() or ""
        assert link.startswith(f"{settings.gateway_url}/phone/#token="), link
        await expect(page.locator("#quality")).to_have_attribute(
            "data-kbps", re.compile(r"^[1-9]\d*$"), timeout=15 * SECONDS
        )
        await expect(page.locator("#quality")).to_have_attribute("data-rtt", re.compile(r"^\d+$"))
        await screenshots_zh_en(page, "candidate-live")

        # A media drain tells the room to reconnect: the page publishes its camera again.
        camera = keys.media_publisher_key(exam, cid, "camera")
        before = await runtime.media.sessions.current(camera)
        assert before is not None
        drain = {"type": "reconnect", "plane": "media", "reason": "drill", "retry_after": 1}
        await runtime.rooms.append(keys.room_key(exam, "r1"), drain)

        async def republished() -> bool:
            now = await runtime.media.sessions.current(camera)
            return now is not None and now.id != before.id

        await until(republished, within=15)
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=15 * SECONDS
        )

        phone = await new_page(browser, errors, viewport={"width": 390, "height": 844})
        await phone.goto(link)
        await phone.locator("#start").click()
        await expect(phone.locator("#state")).to_have_attribute(
            "data-state", "live", timeout=15 * SECONDS
        )
        side = await runtime.media.sessions.current(keys.media_publisher_key(exam, cid, "side"))
        assert side is not None
        assert (side.source, side.cid) == ("side", cid)
        await screenshots_zh_en(phone, "phone")

        # The proctor's tile shows the side camera.
        username = (await client.get("/v1/staff/me", headers=world.proctors["r1"])).json()
        console = await open_console(browser, settings, username["username"], f"{exam}/r1")
        tile = console.locator(f'.tile[data-cid="{cid}"]')
        await tile.locator("button.side").click()
        await expect(tile.locator("video.more")).to_have_js_property(
            "readyState", 4, timeout=15 * SECONDS
        )

        # Logging out: media ended (here and on the server), back to the login form; a
        # talk-back link still being set up (held back 3 s here) is closed too, not left
        # to connect after the session ended.
        async def held_back(route: Route) -> None:
            if route.request.method == "POST":
                await asyncio.sleep(3)
            await route.continue_()

        await page.route("**/v1/whep/me/talkback", held_back)
        async with page.expect_request(
            lambda request: (
                request.url.endswith("/v1/whep/me/talkback") and request.method == "POST"
            ),
            timeout=15 * SECONDS,
        ):
            pass  # the next heartbeat's listen()
        await page.locator("#logout").click()
        await expect(page.locator("#login-step")).to_be_visible()
        await expect(page.locator("#logout")).to_be_hidden()
        assert await page.evaluate("window.testPeers.every((p) => p.connectionState === 'closed')")
        assert await runtime.media.sessions.current(camera) is None
        me = await page.evaluate("fetch('/v1/me').then((r) => r.status)")
        assert me == 401
        assert not [e for e in errors if "Content Security Policy" in e], errors
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        for opened in (page, phone, console):
            if opened is not None:
                await opened.context.close()
