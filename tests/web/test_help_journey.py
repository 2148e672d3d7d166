"""Issue #25's help journey, the candidate page and the proctor console together in a real
Chromium: the candidate raises a hand and sends a message; the console shows the cue (the
tile's badge, an entry in the help list, a tone) and the proctor answers; the answer reaches
the candidate's `#messages` live region, and the request is settled on both pages."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from infra.settings import Settings
from tests.support.factories import new_exam
from tests.web.pages import SECONDS, open_candidate, open_console, runtime_of


async def test_a_raised_hand_and_a_message_reach_the_proctor_who_answers(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8101"]})
    cid = world.candidate_ids["8101"]
    proctor = world.proctors["r1"]
    username = (await client.get("/v1/staff/me", headers=proctor)).json()["username"]
    errors: list[str] = []
    console = await open_console(browser, settings, username, f"{world.exam_id}/r1", errors)
    candidate = await open_candidate(browser, settings, world.exam_id, "8101", errors)
    try:
        await candidate.locator("#check").click()
        await expect(candidate.locator("#check-camera")).to_have_attribute("data-ok", "true")
        await expect(candidate.locator("#join")).to_be_enabled(timeout=20 * SECONDS)
        await candidate.locator("#join").click()
        await expect(candidate.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=15 * SECONDS
        )
        tile = console.locator(f'.tile[data-cid="{cid}"]')
        await expect(tile.locator(".presence")).to_have_attribute("data-state", "joined")

        await candidate.locator("#raise-hand").click()
        await expect(candidate.locator("#raise-hand")).to_have_attribute("aria-pressed", "true")
        entry = console.locator(f'#help-list li[data-cid="{cid}"]')
        await expect(entry).to_contain_text("举手", timeout=10 * SECONDS)
        await expect(tile.locator(".hand-badge")).to_be_visible()
        await expect(tile).to_have_attribute("data-help", "open")
        await expect(console.locator("#help-list")).to_have_attribute("data-chimes", "1")

        await candidate.locator("#help-text").fill("草稿纸用完了")
        await candidate.locator("#help-send").click()
        await expect(entry).to_contain_text("草稿纸用完了", timeout=10 * SECONDS)
        await expect(entry).to_have_count(1)  # one open request per candidate
        await expect(console.locator("#help-list")).to_have_attribute("data-chimes", "2")

        await entry.get_by_label("回复该考生", exact=False).fill("马上送过去")
        await entry.get_by_role("button", name="发送回复").click()
        await expect(entry).to_have_count(0, timeout=10 * SECONDS)
        await expect(tile.locator(".hand-badge")).to_be_hidden()

        messages = candidate.locator("#messages")
        await expect(messages).to_have_attribute("aria-live", "polite")
        await expect(messages.locator("li")).to_have_text(["马上送过去"], timeout=20 * SECONDS)
        await expect(candidate.locator("#raise-hand")).to_have_attribute("aria-pressed", "false")
        assert not [e for e in errors if "Content Security Policy" in e], errors
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        await candidate.context.close()
        await console.context.close()
