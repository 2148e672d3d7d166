"""Recorded playback in the console: the incident timeline's "play" control opens the
candidate's camera recording around the incident, and the browser plays the WebM
segments the gateway serves (session cookie, `media-src 'self'`)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from actors.media.client import MediaPlane
from core import keys
from infra.settings import Settings
from tests.media.gateway.conftest import dedicated_shard
from tests.support.factories import new_exam
from tests.support.wait import until
from tests.web.pages import (
    SECONDS,
    open_candidate,
    open_console,
    pass_checks,
    runtime_of,
    screenshot,
)

SEGMENT_SECONDS = 2.0  # short segments, so that some are stored within the test


async def test_the_console_plays_the_recording_around_an_incident(
    browser: Browser,
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    media: MediaPlane,
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["8001"]})
    cid = world.candidate_ids["8001"]
    proctor = world.proctors["r1"]
    username = (await client.get("/v1/staff/me", headers=proctor)).json()["username"]
    recordings = f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}/recordings"
    room = keys.room_key(world.exam_id, "r1")
    errors: list[str] = []
    async with dedicated_shard(media, settings, room, segment_seconds=SEGMENT_SECONDS):
        console = await open_console(browser, settings, username, f"{world.exam_id}/r1", errors)
        candidate = await open_candidate(browser, settings, world.exam_id, "8001", errors)
        try:
            await pass_checks(candidate)

            async def two_segments() -> bool:
                listed = await client.get(recordings, headers=proctor)
                return len(listed.json()["segments"]) >= 2

            await until(two_segments, within=60, every=0.1)
            raised = await client.post(
                f"/v1/exams/{world.exam_id}/rooms/r1/incidents",
                json={"candidate": cid, "type": "looked_away", "severity": "medium"},
                headers=proctor,
            )
            assert raised.status_code == 201, raised.text
            incident = console.locator(
                f'#incidents li[data-incident="{raised.json()["event_id"]}"]'
            )
            await incident.locator("button.play").click()

            player = console.locator("#player")
            await expect(player).to_be_visible()
            await expect(player.locator("#segments li")).not_to_have_count(0)
            video = console.locator("#playback")
            source = await video.evaluate("(v) => v.currentSrc")
            assert f"/candidates/{cid}/recordings/" in source, source
            # The browser decodes the segment: frames are there and time moves on.
            await console.wait_for_function(
                "() => document.getElementById('playback').readyState >= 2", timeout=20 * SECONDS
            )
            started = await video.evaluate("(v) => v.currentTime")
            await console.wait_for_function(
                "(t) => document.getElementById('playback').currentTime > t + 0.5",
                arg=started,
                timeout=20 * SECONDS,
            )
            assert await video.evaluate("(v) => v.videoWidth") > 0
            await screenshot(console, "console-playback.png")
            assert await video.evaluate("(v) => v.error") is None
            assert not [e for e in errors if "Content Security Policy" in e], errors
            assert not [e for e in errors if "Uncaught" in e], errors
        finally:
            await candidate.context.close()
            await console.context.close()
