"""Issue #25 items 3 and 5 in the proctor console, in a real Chromium: a chief proctor sees
every room of the exam as counts, opens one, sees who each candidate is (name, number,
enrolment photo) and what they uploaded (new uploads appear live), gets a help request as a
badge, a list entry and a tone, answers it from the keyboard (which settles it), opens a
second room, and logs out. Every visible control is labelled and reachable by keyboard."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect

from core import keys
from infra.settings import Settings
from tests.support.factories import assigned_staff, enrol_face, joined_candidate, new_exam
from tests.web.pages import SECONDS, log_in_console, runtime_of, screenshots_zh_en

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"

# Every visible control, image and video has a name, and every control takes the focus.
UNLABELLED = """
() => {
  const bad = [];
  const named = (el) => (el.getAttribute('aria-label') || '').trim()
    || [...(el.labels || [])].map((l) => l.textContent).join('').trim()
    || (el.tagName === 'IMG' ? el.alt.trim() : '')
    || (['BUTTON', 'A'].includes(el.tagName)
      ? el.textContent.trim() || [...el.querySelectorAll('img')].map((i) => i.alt).join('') : '');
  for (const el of document.querySelectorAll('button, input, select, textarea, a, img, video')) {
    if (!el.checkVisibility()) continue;
    if (!named(el)) bad.push(el.outerHTML.slice(0, 160));
    if (!['IMG', 'VIDEO'].includes(el.tagName) && el.tabIndex < 0) bad.push(`no tab: ${el.id}`);
  }
  return bad;
}
"""


async def upload(client: httpx.AsyncClient, candidate: httpx.Headers, kind: str, stem: str) -> None:
    body = (FACES / f"{stem}.jpg").read_bytes()
    headers = {**candidate, "content-type": "image/jpeg"}
    sent = await client.post(f"/v1/uploads/{kind}", content=body, headers=headers)
    assert sent.status_code == 201, sent.text


async def accessible(page: Page) -> None:
    assert await page.evaluate(UNLABELLED) == []


async def test_a_chief_proctor_sees_who_is_there_answers_help_and_logs_out(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(
        client, runtime, {"r1": ["7101", "7102"], "r2": ["7201"]}, keep_enrolment_photo=True
    )
    cid, other, second = (world.candidate_ids[n] for n in ("7101", "7102", "7201"))
    assert (await enrol_face(client, world, cid))["photo_kept"] is True
    _, chief = await assigned_staff(client, world, "chief-proctor")
    chief_name = (await client.get("/v1/staff/me", headers=chief)).json()["username"]
    candidate = await joined_candidate(client, world.exam_id, "7101")
    await upload(client, candidate, "photos", "person_b_1")
    errors: list[str] = []
    console = await log_in_console(browser, settings, chief_name, errors)
    try:
        # The overview: counts per room, no video.
        row = console.locator(f'#overview tr[data-room="{world.exam_id}/r1"]')
        await expect(row.locator('td[data-column="candidates"]')).to_have_text("2")
        await expect(row.locator('td[data-column="joined"]')).to_have_text("1")
        await expect(row.locator('td[data-column="absent"]')).to_have_text("1")
        await expect(
            console.locator(f'#overview tr[data-room="{world.exam_id}/r2"]')
        ).to_be_visible()
        assert await console.locator("video").count() == 1  # the hidden playback player only
        await accessible(console)
        await screenshots_zh_en(console, "console-overview")

        await row.get_by_role("button").click()
        await expect(console.locator("#room-step")).to_be_visible()
        tile = console.locator(f'.tile[data-cid="{cid}"]')
        await expect(tile.locator(".who")).to_have_text("Candidate 7101")
        await expect(tile.locator(".candidate-no")).to_have_text("7101")
        photo = tile.locator("img.enrolment")
        await expect(photo).to_be_visible()
        await expect(photo).to_have_js_property("complete", True)
        assert await photo.evaluate("(img) => img.naturalWidth") > 0
        absent = console.locator(f'.tile[data-cid="{other}"]')
        await expect(absent.locator(".no-photo")).to_be_visible()
        await expect(absent.locator("img.enrolment")).to_be_hidden()

        # Uploads: the one from before, then a new one, live.
        uploads = tile.locator("ul.uploads")
        await expect(uploads.locator("img")).to_have_count(1)
        await upload(client, candidate, "whiteboards", "person_b_2")
        await expect(uploads.locator("img")).to_have_count(2, timeout=10 * SECONDS)
        newest = uploads.locator("img").first
        await expect(newest).to_have_js_property("complete", True)
        assert await newest.evaluate("(img) => img.naturalWidth") > 0
        assert (await newest.get_attribute("alt") or "").startswith("白板 · Candidate 7101 (7101)")

        # A help request, as the help route journals it: badge, list entry and tone.
        await runtime.rooms.append(
            keys.room_key(world.exam_id, "r1"),
            {"type": "help", "cid": cid, "kind": "message", "text": "第三页缺失"},
        )
        entry = console.locator(f'#help-list li[data-cid="{cid}"]')
        await expect(entry).to_contain_text("第三页缺失", timeout=10 * SECONDS)
        await expect(entry).to_contain_text("Candidate 7101 (7101)")
        await expect(tile).to_have_attribute("data-help", "open")
        await expect(tile.locator(".hand-badge")).to_be_visible()
        await expect(console.locator("#help-list")).to_have_attribute("aria-live", "assertive")
        await expect(console.locator("#help-list")).to_have_attribute("data-chimes", "1")
        await accessible(console)
        await screenshots_zh_en(console, "console-room-help")

        # Answered from the keyboard: the request is settled, the candidate has the answer.
        answer = entry.get_by_label("回复该考生", exact=False)
        await answer.focus()
        await console.keyboard.type("马上给您换一份")
        await console.keyboard.press("Enter")
        await expect(entry).to_have_count(0, timeout=10 * SECONDS)
        await expect(tile.locator(".hand-badge")).to_be_hidden()
        await expect(console.locator("#no-help")).to_be_visible()
        await expect(console.locator("#messages li").first).to_contain_text("马上给您换一份")
        mine = (await client.get("/v1/me/room", headers=candidate)).json()
        assert [m["text"] for m in mine["messages"]] == ["马上给您换一份"]
        assert mine["help"] is None

        # Back to the overview, then the second room.
        await console.locator("#back").click()
        await console.locator(f'button[data-room="{world.exam_id}/r2"]').click()
        await expect(console.locator("#room-h")).to_have_text(f"{world.exam_id} / r2")
        await expect(console.locator(f'.tile[data-cid="{second}"] .who')).to_have_text(
            "Candidate 7201"
        )
        await expect(console.locator(".tile")).to_have_count(1)

        await console.locator("#logout").click()
        await expect(console.locator("#login-step")).to_be_visible()
        await expect(console.locator("#logout")).to_be_hidden()
        gone = await console.evaluate("fetch('/v1/staff/me').then((r) => r.status)")
        assert gone == 401
        assert not [e for e in errors if "Content Security Policy" in e], errors
        assert not [e for e in errors if "Uncaught" in e], errors
    finally:
        await console.context.close()
