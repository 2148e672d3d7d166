"""Issue #25, item 1, in a real Chromium: the exam's schedule on the candidate's page and
the proctor's console.

A candidate who arrives early logs in, accepts the policy and checks the devices, then
waits in the waiting room with a countdown; the page joins by itself at the start and,
at the end, says that the exam is over (the gateway stopped the media). In the console,
a candidate a proctor ended and one too late to join get a readmit button.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from core import keys
from infra.settings import Settings
from tests.support.factories import auth, new_exam
from tests.web.pages import (
    ARTIFACTS,
    SECONDS,
    check_devices,
    open_candidate,
    open_console,
    runtime_of,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
# From the exam's creation to its start: room for the login, the policy and the device
# check on a loaded machine, so that the candidate is early. The exam then lasts END_S.
START_S = 30
END_S = 20


async def _journal(app: FastAPI, room: str) -> list[dict[str, Any]]:
    entries: Any = await runtime_of(app).redis.xrange(keys.room_events_key(room))
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def test_an_early_candidate_waits_joins_at_the_start_and_sees_the_end(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    starts = datetime.now(UTC) + timedelta(seconds=START_S)
    ends = starts + timedelta(seconds=END_S)
    world = await new_exam(
        client,
        runtime_of(app),
        {"r1": ["7001"]},
        with_proctors=False,
        starts_at=starts.isoformat(),
        ends_at=ends.isoformat(),
    )
    cid = world.candidate_ids["7001"]
    errors: list[str] = []
    page = await open_candidate(browser, settings, world.exam_id, "7001", errors)
    try:
        await check_devices(page)
        await page.locator("#join").click()
        wait = page.locator("#wait-step")
        await expect(wait).to_be_visible()
        assert datetime.now(UTC) < starts, "the candidate was not early: raise START_S"
        await expect(wait).to_have_attribute("data-state", "waiting")
        await expect(page.locator("#countdown")).to_have_text(re.compile(r"^00:[0-5]\d$"))
        first = await page.locator("#countdown").text_content()
        await expect(page.locator("#countdown")).not_to_have_text(first or "")  # it counts
        await page.screenshot(path=_artifact("schedule-waiting-zh.png"), full_page=True)
        await page.locator("#lang").click()
        await expect(page.locator("#wait-h")).to_have_text("Waiting for the exam to start")
        await page.screenshot(path=_artifact("schedule-waiting-en.png"), full_page=True)
        _to_docs("schedule-waiting-zh.png", "schedule-waiting-en.png")

        # At the start the page joins by itself and publishes.
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=(START_S + 30) * SECONDS
        )
        assert datetime.now(UTC) >= starts
        pointer = keys.media_publisher_key(world.exam_id, cid, "camera")
        assert await runtime_of(app).media.sessions.current(pointer) is not None

        # At the end the next heartbeat ends the session and the media; the page says so.
        await expect(page.locator("#over-step")).to_be_visible(timeout=(END_S + 30) * SECONDS)
        assert datetime.now(UTC) >= ends
        await expect(page.locator("#over-h")).to_have_text("The exam is over")
        assert await runtime_of(app).media.sessions.current(pointer) is None
        left = [e for e in await _journal(app, f"{world.exam_id}/r1") if e.get("cid") == cid]
        assert (left[-1]["type"], left[-1].get("why")) == ("left", "exam_over")
        tracks = await page.evaluate(
            "document.getElementById('preview').srcObject.getTracks().map((t) => t.readyState)"
        )
        assert set(tracks) == {"ended"}
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        await page.context.close()


async def test_the_console_readmits_an_ended_and_a_late_candidate(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    # Started 20 minutes ago: past the late cut-off (15) for whoever has not come yet.
    start = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    world = await new_exam(client, runtime_of(app), {"r1": ["7101", "7102"]}, starts_at=start)
    exam, ended, late = world.exam_id, world.candidate_ids["7101"], world.candidate_ids["7102"]
    proctor = world.proctors["r1"]
    base = f"/v1/exams/{exam}/rooms/r1/candidates"
    assert (await client.post(f"{base}/{ended}/end", headers=proctor)).status_code == 201
    username = (await client.get("/v1/staff/me", headers=proctor)).json()["username"]
    errors: list[str] = []
    console = await open_console(browser, settings, username, f"{exam}/r1", errors)
    try:
        for cid in (ended, late):
            readmit = console.locator(f'.tile[data-cid="{cid}"] button.readmit')
            await expect(readmit).to_be_visible()
            await expect(readmit).to_have_text("准许入场")
            await readmit.click()
            await expect(readmit).to_be_hidden()
        for number in ("7101", "7102"):
            logged = await client.post(
                "/v1/sessions", json={"exam_no": exam, "candidate_no": number}
            )
            assert logged.status_code == 201, logged.text
            headers = auth(logged.json()["token"])
            consent = {"policy_version": "1"}
            assert (
                await client.post("/v1/me/consent", json=consent, headers=headers)
            ).status_code == 204
            joined = await client.post("/v1/me/join", json={"network": "wifi"}, headers=headers)
            assert joined.status_code == 200, joined.text
        tile = console.locator(f'.tile[data-cid="{late}"]')
        await expect(tile.locator(".presence")).to_have_attribute("data-state", "joined")
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        await console.context.close()


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def _to_docs(*names: str) -> None:
    """The docs' copies, on request (as the README's console picture)."""
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        for name in names:
            shutil.copyfile(ARTIFACTS / name, DOCS / name)
