"""The review page in a real Chromium (issue #26 item 5): an examiner plays a candidate's
whole recorded session across segments, jumps to an incident by its marker and scores the
performance against the rubric; the chief proctor works the review queue top-down."""

from __future__ import annotations

import dataclasses
import time

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from actors.media.client import MediaPlane
from core import keys
from infra.settings import Settings
from tests.media.gateway.conftest import dedicated_shard
from tests.support.factories import PASSWORD, assigned_reviewers, new_exam
from tests.support.wait import until
from tests.web.pages import (
    SECONDS,
    new_page,
    open_candidate,
    pass_checks,
    runtime_of,
    screenshots_zh_en,
)

SCREEN_SESSION = "5c" * 16
SEGMENT_SECONDS = 2.0  # short segments, so that a few are stored within the test
RUBRIC = {
    "criteria": [
        {"id": "pitch", "label": {"zh": "音准", "en": "Pitch"}, "max_points": 10},
        {"id": "rhythm", "label": {"zh": "节奏", "en": "Rhythm"}, "max_points": 5},
    ]
}


async def open_review(
    browser: Browser, settings: Settings, username: str, exam: str, errors: list[str]
) -> Page:
    page = await new_page(browser, errors, viewport={"width": 1100, "height": 900})
    await page.goto(f"{settings.gateway_url}/review/")
    await page.get_by_label("用户名").fill(username)
    await page.get_by_label("密码").fill(PASSWORD)
    await page.locator("#login-form button").click()
    await page.locator(f'#exams button[data-exam="{exam}"]').click()
    await expect(page.locator("#queue-step")).to_be_visible()
    return page


async def test_an_examiner_scores_a_whole_session_and_the_chief_works_the_queue(
    browser: Browser,
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    media: MediaPlane,
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["8001", "8002", "8003"]})
    staff = await assigned_reviewers(client, world)
    base = f"/v1/exams/{world.exam_id}"
    rubric = await client.put(f"{base}/rubric", json=RUBRIC, headers=world.organiser)
    assert rubric.status_code == 200, rubric.text
    cid, second = world.candidate_ids["8001"], world.candidate_ids["8002"]
    session_url = f"{base}/review/candidates/{cid}/session"
    proctor = world.proctors["r1"]

    async def camera_segments(at_least: int) -> bool:
        listed = await client.get(session_url, headers=staff.examiner)
        return len(listed.json()["sources"].get("camera", [])) >= at_least

    async def incident(candidate: str, severity: str) -> None:
        raised = await client.post(
            f"{base}/rooms/r1/incidents",
            json={"candidate": candidate, "type": "phone_seen", "severity": severity},
            headers=proctor,
        )
        assert raised.status_code == 201, raised.text

    errors: list[str] = []
    room = keys.room_key(world.exam_id, "r1")
    async with dedicated_shard(media, settings, room, segment_seconds=SEGMENT_SECONDS):
        candidate = await open_candidate(browser, settings, world.exam_id, "8001", errors)
        try:
            await pass_checks(candidate)
            await until(lambda: camera_segments(1), within=60, every=0.2)
            await incident(cid, "high")  # in the middle of the recording
            await until(lambda: camera_segments(3), within=60, every=0.2)
        finally:
            await candidate.context.close()
    await incident(second, "medium")
    # A screen source alongside: this candidate page shares no screen, so the camera's own
    # stored segments are indexed again as another session's screen recording.
    for stored in await runtime.media.recordings.between(
        world.exam_id, cid, 0.0, time.time(), lookback=0.0, limit=100
    ):
        renamed = stored.name.replace(stored.session, SCREEN_SESSION)
        await runtime.media.recordings.add(
            world.exam_id,
            cid,
            dataclasses.replace(stored, name=renamed, session=SCREEN_SESSION, source="screen"),
        )
    session = (await client.get(session_url, headers=staff.examiner)).json()
    assert len(session["sources"]["screen"]) == len(session["sources"]["camera"])
    camera = session["sources"]["camera"]
    [marker] = [m for m in session["markers"] if m["kind"] == "incident"]
    holding = next(
        i
        for i, s in enumerate(camera)
        if s["start"] <= marker["at"] < s["end"] or s["start"] > marker["at"]
    )

    # The examiner: the whole session, its incident marker, playing on across segments.
    examiner = await open_review(browser, settings, staff.examiner_name, world.exam_id, errors)
    try:
        await examiner.locator(f'#queue-rows tr[data-candidate="{cid}"] button.open').click()
        await expect(examiner.locator("#session-step")).to_be_visible()
        await expect(examiner.locator("#segment-list li")).to_have_count(len(camera))
        await expect(examiner.locator("#ticks span")).to_have_count(len(session["markers"]))
        video = examiner.locator("#camera")
        await examiner.locator(f'#markers button[data-marker="{marker["id"]}"]').click()
        await expect(video).to_have_attribute("data-segment", str(holding))
        assert camera[holding]["name"] in await video.evaluate("(v) => v.currentSrc")
        # The screen plays side by side, at the same moment of the session.
        screen = examiner.locator("#screen")
        await expect(examiner.locator("#screen-box")).to_be_visible()
        await expect(screen).to_have_attribute("data-segment", str(holding))
        screen_name = session["sources"]["screen"][holding]["name"]
        assert screen_name in await screen.evaluate("(v) => v.currentSrc")
        # From the first segment on, the player goes over the boundary by itself.
        await examiner.locator('#segment-list button[data-index="0"]').click()
        await expect(video).to_have_attribute("data-segment", "0")
        await expect(video).to_have_attribute("data-segment", "1", timeout=20 * SECONDS)
        await expect(screen).to_have_attribute("data-segment", "1")
        await examiner.wait_for_function(
            "() => document.getElementById('camera').readyState >= 2", timeout=20 * SECONDS
        )
        assert await video.evaluate("(v) => v.videoWidth") > 0
        assert await video.evaluate("(v) => v.error") is None
        await screenshots_zh_en(examiner, "review-session")

        await examiner.get_by_label("音准").fill("8")
        await examiner.get_by_label("节奏").fill("3.5")
        await expect(examiner.locator("#total")).to_have_text("11.5")
        await examiner.locator("#comment").fill("steady tempo")
        await examiner.locator("#save-scores").click()
        await expect(examiner.locator("#notice")).to_have_text("评分已保存")
        await expect(examiner.locator("#sheets li")).to_have_count(1)
        sheets = (await client.get(session_url, headers=staff.examiner)).json()["sheets"]
        assert [(s["examiner"], s["points"], s["total"]) for s in sheets] == [
            (staff.examiner_name, {"pitch": 8, "rhythm": 3.5}, 11.5)
        ]
    finally:
        await examiner.context.close()

    # The chief proctor: the pending queue, highest risk first; deciding it brings up the next.
    chief = await open_review(browser, settings, staff.chief_name, world.exam_id, errors)
    try:
        rows = chief.locator("#queue-rows tr")
        await expect(rows).to_have_count(3)
        await expect(rows.first).to_have_attribute("data-candidate", cid)
        await expect(rows.nth(1)).to_have_attribute("data-candidate", second)
        await screenshots_zh_en(chief, "review-queue")
        await rows.first.locator("button.open").click()
        await expect(chief.locator("#session-h")).to_have_attribute("data-candidate", cid)
        await chief.locator('input[name="decision"][value="voided"]').check()
        await chief.locator("#note").fill("phone in hand at the incident")
        await chief.locator("#decision-form button[type=submit]").click()
        await expect(chief.locator("#session-h")).to_have_attribute("data-candidate", second)
        await expect(chief.locator("#notice")).to_have_text("结论已保存")
        await chief.locator("#back").click()
        await expect(rows).to_have_count(2)
        await expect(rows.first).to_have_attribute("data-candidate", second)
        decided = (await client.get(session_url, headers=staff.chief)).json()["decision"]
        assert (decided["decision"], decided["by"]) == ("voided", staff.chief_name)
        # Logging out ends the session itself, not only the page's view of it.
        await chief.locator("#logout").click()
        await expect(chief.locator("#login-step")).to_be_visible()
        gone = await chief.evaluate("fetch('/v1/staff/me').then((r) => r.status)")
        assert gone == 401
    finally:
        await chief.context.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert not [e for e in errors if "Uncaught" in e], errors
