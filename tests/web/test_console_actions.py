"""A tile's own controls in the console: flag the candidate, talk to them alone (push-to-talk
with `?to=`), ask for their screen and watch it on demand, end their session; the
candidate's page hears the proctor, shares the screen, then says that the session is over."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from infra.settings import Settings
from tests.support.factories import new_exam
from tests.web.pages import SECONDS, open_candidate, open_console, pass_checks, runtime_of


async def test_flag_talk_to_one_and_end_a_session(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["9001"]})
    cid = world.candidate_ids["9001"]
    proctor = world.proctors["r1"]
    username = (await client.get("/v1/staff/me", headers=proctor)).json()["username"]
    errors: list[str] = []
    console = await open_console(browser, settings, username, f"{world.exam_id}/r1", errors)
    candidate = await open_candidate(browser, settings, world.exam_id, "9001", errors)
    try:
        await pass_checks(candidate)
        tile = console.locator(f'.tile[data-cid="{cid}"]')
        await expect(tile.locator(".presence")).to_have_attribute("data-state", "joined")

        await tile.get_by_role("button", name="标记异常").click()
        flagged = console.locator("#incidents li", has_text="flagged_by_proctor")
        await expect(flagged).to_have_attribute("data-status", "open")
        await expect(tile.locator(".badge")).to_have_text("1")
        await expect(flagged.locator("time")).to_have_count(1)

        talk = tile.locator("button.talk")
        await talk.hover()
        await console.mouse.down()
        await expect(talk).to_have_attribute("aria-pressed", "true")
        await expect(candidate.locator("#talkback")).to_have_attribute(
            "data-state", "on", timeout=20 * SECONDS
        )
        await console.mouse.up()
        await expect(candidate.locator("#talkback")).to_have_attribute(
            "data-state", "off", timeout=20 * SECONDS
        )

        await tile.get_by_role("button", name="请求共享屏幕").click()
        await expect(candidate.locator("#messages li")).to_have_text(
            ["请共享您的屏幕 / Please share your screen"], timeout=15 * SECONDS
        )
        await candidate.locator("#share-screen").click()
        await expect(candidate.locator("#screen-state")).to_have_attribute(
            "data-state", "on", timeout=15 * SECONDS
        )
        await tile.locator("button.screen").click()
        await expect(tile.locator("video.more")).to_have_js_property(
            "readyState", 4, timeout=20 * SECONDS
        )
        assert await tile.locator("video.more").evaluate("(v) => v.videoWidth") > 0
        await expect(tile.locator("button.screen")).to_have_attribute("aria-pressed", "true")
        await tile.locator("button.side").click()  # no side device publishes
        await expect(tile.locator("button.side")).to_have_text("未共享")
        await expect(tile.locator("video.more")).to_be_hidden()

        end = tile.locator("button.end")
        await end.click()
        await expect(end).to_have_text("确认结束？")
        await end.click()
        await expect(tile.locator(".presence")).to_have_attribute("data-state", "ended")
        await expect(candidate.locator("#connection")).to_have_attribute(
            "data-state", "ended", timeout=20 * SECONDS
        )
        refused = await candidate.evaluate("fetch('/v1/me').then((r) => r.status)")
        assert refused == 401
        assert not [e for e in errors if "Content Security Policy" in e], errors
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        await candidate.context.close()
        await console.context.close()
