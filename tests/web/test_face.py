"""Face verification in the browser, against the real verifier: Chromium's camera films a
real face (tests/web/camera.py) that the test turns when the page asks, as a candidate would.

The candidate who matches and passes the liveness challenge joins; the one whose attempts
run out waits for a proctor, who compares enrolled and live in the console and accepts.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from core import keys, room_text
from infra.settings import Settings
from tests.support.factories import ExamWorld, new_exam
from tests.web.camera import FACES, FakeCamera
from tests.web.pages import (
    SECONDS,
    check_devices,
    log_in_console,
    open_candidate,
    open_console,
    runtime_of,
    screenshot,
)

VERIFIER = 60 * SECONDS  # the verifier runs on this machine's CPUs, shared with the browser
INSTRUCTIONS = {  # what the page says, in its default language, for each movement
    "turn_left": "请把头转向您的左侧，再转回正面",
    "turn_right": "请把头转向您的右侧，再转回正面",
    "nod": "请点头：低头，再抬回正面",
}
IN_ENGLISH = {
    "turn_left": "Turn your head to your left, then back to the front",
    "turn_right": "Turn your head to your right, then back to the front",
    "nod": "Nod: tilt your head down, then back up",
}


async def enrol(client: httpx.AsyncClient, world: ExamWorld, number: str, stem: str) -> None:
    cid = world.candidate_ids[number]
    response = await client.put(
        f"/v1/exams/{world.exam_id}/candidates/{cid}/face",
        content=(FACES / f"{stem}.jpg").read_bytes(),
        headers={**world.organiser, "content-type": "image/jpeg"},
    )
    assert response.status_code == 200, response.text


async def settled(page: Page, *states: str) -> str:
    """The face step's state once it is one of `states` (the verifier takes its time)."""
    step = page.locator("#face-step")
    await page.wait_for_function(
        "(states) => states.includes(document.getElementById('face-step').dataset.state)",
        arg=list(states),
        timeout=VERIFIER,
    )
    state = await step.get_attribute("data-state")
    assert state is not None
    return state


async def journal(app: FastAPI, key: str) -> list[dict[str, Any]]:
    entries: Any = await runtime_of(app).redis.xrange(keys.room_events_key(key))
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def test_the_candidate_verifies_passes_liveness_and_joins(
    face_browser: Browser,
    camera: FakeCamera,
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
) -> None:
    world = await new_exam(
        client, runtime_of(app), {"r1": ["7001"]}, require_face_verification=True
    )
    await enrol(client, world, "7001", "person_b_1")
    await camera.show("person_b_2")  # the same person, another photo
    errors: list[str] = []
    page = await open_candidate(face_browser, settings, world.exam_id, "7001", errors)
    try:
        await check_devices(page)
        await page.locator("#join").click()
        await expect(page.locator("#face-step")).to_be_visible()
        await expect(page.locator("#face-step")).to_have_attribute("data-state", "ready")
        await page.locator("#verify").click()
        state = await settled(page, "challenge", "mismatch", "review")
        assert state == "challenge", await page.locator("#face-status").text_content()

        instruction = page.locator("#face-instruction")
        movement = await instruction.get_attribute("data-movement")
        assert movement in INSTRUCTIONS
        await expect(instruction).to_have_text(INSTRUCTIONS[movement])
        await screenshot(page, "candidate-face.png")
        await page.locator("#lang").click()
        await expect(instruction).to_have_text(IN_ENGLISH[movement])
        await expect(page.locator("#liveness-start")).to_have_text("Start")
        await page.locator("#lang").click()
        await expect(instruction).to_have_text(INSTRUCTIONS[movement])
        sweep = await camera.sweep(movement)
        await page.locator("#liveness-start").click()
        await expect(page.locator("#face-step")).to_have_attribute("data-state", "recording")
        await camera.perform(sweep)
        state = await settled(page, "passed", "failed")
        assert state == "passed", await page.locator("#face-status").text_content()
        print(f"\nliveness challenge {movement}: passed in the browser")

        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=30 * SECONDS
        )
        cid = world.candidate_ids["7001"]
        record = await runtime_of(app).redis.hgetall(keys.face_record_key(world.exam_id, cid))
        assert record[b"status"] == b"verified"
        assert record[b"liveness"] == b"passed"
        events = [
            e["type"] for e in await journal(app, f"{world.exam_id}/r1") if e.get("cid") == cid
        ]
        assert "joined" in events
        assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors
    finally:
        await page.context.close()


async def test_attempts_run_out_and_a_proctor_accepts_in_the_console(
    face_browser: Browser,
    camera: FakeCamera,
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
) -> None:
    world = await new_exam(
        client,
        runtime_of(app),
        {"r1": ["7101"]},
        face_attempts=2,
        keep_enrolment_photo=True,
        require_face_verification=True,
    )
    await enrol(client, world, "7101", "person_a_1")
    await camera.show("person_b_2")  # someone else sits the exam
    cid = world.candidate_ids["7101"]
    proctor = world.proctors["r1"]
    username = (await client.get("/v1/staff/me", headers=proctor)).json()["username"]
    errors: list[str] = []
    console = await open_console(face_browser, settings, username, f"{world.exam_id}/r1", errors)
    page = await open_candidate(face_browser, settings, world.exam_id, "7101", errors)
    try:
        await check_devices(page)
        await page.locator("#join").click()
        await expect(page.locator("#face-step")).to_have_attribute("data-state", "ready")
        await page.locator("#verify").click()
        assert await settled(page, "mismatch", "challenge", "review") == "mismatch"
        await expect(page.locator("#face-status")).to_contain_text("剩余次数: 1")
        await page.locator("#verify").click()
        assert await settled(page, "review", "mismatch", "challenge") == "review"

        # The request reaches the console by the room's event stream.
        review = console.locator(f'#reviews li[data-cid="{cid}"]')
        await expect(review).to_have_attribute("data-status", "pending", timeout=15 * SECONDS)
        await expect(console.locator(f'.tile[data-cid="{cid}"] .face')).to_have_attribute(
            "data-review", "pending"
        )
        images = review.locator("img")
        await expect(images).to_have_count(3)  # the enrolment photo and the two live frames
        for index in range(3):
            await expect(images.nth(index)).to_have_js_property("complete", True)
            assert await images.nth(index).evaluate("(img) => img.naturalWidth") > 0
        unlabelled = await console.evaluate(
            "[...document.querySelectorAll('input, select')].filter((e) => !e.labels.length).length"
        )
        assert unlabelled == 0
        # A console opened now (another window): the room shows a pending review, and the
        # room's page lists it.
        later = await log_in_console(face_browser, settings, username, errors)
        try:
            room_item = later.locator(
                "#rooms li", has=later.locator(f'[data-room="{world.exam_id}/r1"]')
            )
            await expect(room_item.locator(".badge.reviews")).to_have_text("1")
            await room_item.locator("button").click()
            listed = later.locator(f'#reviews li[data-cid="{cid}"]')
            await expect(listed).to_have_attribute("data-status", "pending")
            await expect(listed.locator("img")).to_have_count(3)
        finally:
            await later.context.close()

        await review.get_by_label("复核说明（将记入审计日志）").fill("ID card checked on camera")
        await screenshot(console, "console-review.png")
        await review.locator('button[value="accept"]').click()
        await expect(review).to_have_attribute("data-status", "accepted")

        # The candidate's page sees the acceptance and joins.
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=30 * SECONDS
        )
        events = [e for e in await journal(app, f"{world.exam_id}/r1") if e.get("cid") == cid]
        decided = [e for e in events if e["type"] == "face_review"]
        assert [room_text.FREE_TEXT["note"] in e for e in decided] == [True]  # sealed at rest
        data_keys = runtime_of(app).exams.keys
        opened = [await room_text.opened(data_keys, world.exam_id, e) for e in decided]
        audited = [(e["decision"], e["by"], e["note"]) for e in opened]
        assert audited == [("accepted", username, "ID card checked on camera")]
        base = f"/v1/exams/{world.exam_id}/rooms/r1/face-reviews"
        (stored,) = (await client.get(base, headers=proctor)).json()["reviews"]
        assert stored["note"] == "ID card checked on camera"
        assert not [e for e in errors if "Content Security Policy" in e or "Uncaught" in e], errors
    finally:
        await page.context.close()
        await console.context.close()
