"""The candidate page and the proctor console in a real Chromium, against the real gateway.

The candidate logs in, accepts the policy, passes the device and network check,
joins and publishes by WHIP; the proctor's console shows the candidate's tile
with moving video (WHEP), an incident raised by the API as a badge, and the
proctor's push-to-talk reaches the candidate's page as an audio track.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import httpx
import psutil
from fastapi import FastAPI
from PIL import Image
from playwright.async_api import Browser, FilePayload, Page, expect

from infra.settings import Settings
from tests.support.factories import new_exam
from tests.web.pages import (
    SECONDS,
    SELECTED_PAIRS,
    open_candidate,
    open_console,
    pass_checks,
    runtime_of,
)

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
DOCS = Path(__file__).resolve().parents[2] / "docs"


async def frame_of(page: Page, cid: str) -> bytes:
    return await page.locator(f'.tile[data-cid="{cid}"] video.camera').screenshot()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (9, 99, 199)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_candidate_publishes_and_the_console_sees_it(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["1001"]})
    cid = world.candidate_ids["1001"]
    proctor = world.proctors["r1"]
    username = (await client.get("/v1/staff/me", headers=proctor)).json()["username"]
    errors: list[str] = []
    console = await open_console(browser, settings, username, f"{world.exam_id}/r1", errors)
    unlabelled = await console.evaluate(
        "[...document.querySelectorAll('input, select')].filter((e) => !e.labels.length).length"
    )
    assert unlabelled == 0
    candidate = await open_candidate(browser, settings, world.exam_id, "1001", errors)
    try:
        await pass_checks(candidate)
        cookies = await candidate.context.cookies()
        assert [c["name"] for c in cookies] == ["examday_session"]
        assert cookies[0]["httpOnly"]
        assert await candidate.evaluate("window.localStorage.length") == 0
        assert "examday_session" not in await candidate.evaluate("document.cookie")

        tile = console.locator(f'.tile[data-cid="{cid}"]')
        await expect(tile.locator(".presence")).to_have_attribute("data-state", "joined")
        video = tile.locator("video.camera")
        live = time.monotonic()
        await expect(video).to_have_js_property("readyState", 4, timeout=15 * SECONDS)
        print(f"\ncandidate live -> console tile playing: {time.monotonic() - live:.1f} s")
        # The media shard answers on loopback only. Chromium gathers on every interface and
        # may pick one of this host's own addresses for its end: the kernel delivers that
        # locally, so no packet leaves the machine (it is not 127/8, though: see README).
        own = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
        for page in (candidate, console):
            pairs = await page.evaluate(SELECTED_PAIRS)
            assert pairs, "no connected peer connection"
            assert all(a in own and b.startswith("127.") for a, b in pairs), pairs
        first = await frame_of(console, cid)
        await console.wait_for_timeout(700)
        assert await frame_of(console, cid) != first, "the tile's video does not move"

        raised = await client.post(
            f"/v1/exams/{world.exam_id}/rooms/r1/incidents",
            json={"candidate": cid, "type": "second_person", "severity": "high"},
            headers=proctor,
        )
        assert raised.status_code == 201, raised.text
        await expect(tile.locator(".badge")).to_have_text("1")
        await expect(console.locator("#incidents li")).to_contain_text("second_person")

        sheet: FilePayload = {"name": "sheet.png", "mimeType": "image/png", "buffer": png()}
        await candidate.set_input_files("#photo", files=[sheet])
        await candidate.locator("#photo-form button").click()
        await expect(candidate.locator("#photo-result")).to_have_attribute("data-done", "true")

        await console.locator("#talk").hover()
        await console.mouse.down()
        await expect(candidate.locator("#talkback")).to_have_attribute(
            "data-state", "on", timeout=20 * SECONDS
        )
        tracks = await candidate.evaluate(
            "document.getElementById('talkback-audio').srcObject.getAudioTracks()"
            ".map((t) => t.readyState)"
        )
        assert tracks == ["live"]
        await save_screenshots(console, candidate)
        await console.mouse.up()
        await expect(candidate.locator("#talkback")).to_have_attribute(
            "data-state", "off", timeout=20 * SECONDS
        )

        await console.locator('#incidents button[data-decision="dismissed"]').click()
        await expect(tile.locator(".badge")).to_be_hidden()
        await expect(console.locator("#incidents li")).to_have_attribute("data-status", "dismissed")
        assert not [e for e in errors if "Content Security Policy" in e], errors
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        await console.context.close()
        await candidate.context.close()


async def save_screenshots(console: Page, candidate: Page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await console.screenshot(path=ARTIFACTS / "console-zh.png", full_page=True)
    # In English too: CI machines may lack CJK fonts, and the README's copy must be legible.
    # By keyboard: moving the mouse would leave the held talk button and stop talking.
    await console.locator("#lang").focus()
    await console.keyboard.press("Enter")
    await expect(console.locator("html")).to_have_attribute("lang", "en")
    await expect(console.locator('#room-step h3[data-i18n="incidents"]')).to_have_text("Incidents")
    await candidate.locator("#lang").focus()
    await candidate.keyboard.press("Enter")
    await expect(candidate.locator("#talkback")).to_have_text("The proctor is speaking")
    ARTIFACTS.mkdir(exist_ok=True)
    await console.screenshot(path=ARTIFACTS / "console.png", full_page=True)
    await candidate.screenshot(path=ARTIFACTS / "candidate.png", full_page=True)
    await expect(console.locator("#talk")).to_have_text("Talking…")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":  # the README's copy, on request
        shutil.copyfile(ARTIFACTS / "console.png", DOCS / "console.png")
