"""Issue #25, item 2, in a real Chromium: the organiser's console, one organiser's day.

The organiser logs in, creates a proctor's account and an exam, imports a roster with one
bad row (the row's error is shown in a table, and nothing is imported), then the good
roster; assigns the proctor (who may then see the room) and takes them off again (404);
watches the live overview count a candidate who joined; publishes a new policy version
(the logged-in candidate's join is refused `consent_required` until they accept again);
is refused an edit that ends before it starts; places a legal hold; removes a candidate;
cancels the exam (the live candidate's next beat answers `exam_cancelled`); logs out.
Each view is pictured in Chinese and English (docs/screenshots/organiser-*.png).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, FilePayload, Page, expect

from infra.settings import Settings
from tests.support.factories import PASSWORD, auth, new_organiser, staff_login
from tests.web.pages import SECONDS, new_page, runtime_of, screenshots_zh_en


def _local(moment: datetime) -> str:
    """A datetime-local input's value; the page runs in UTC (`timezone_id`)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _roster(exam: str, bad_date: bool) -> bytes:
    born = "2000-13-45" if bad_date else "2000-02-03"
    rows = [
        "exam_no,candidate_no,name,date_of_birth,room,guardian_consent",
        f"{exam},8101,Li Lei,2000-01-01,r1,",
        f"{exam},8102,Han Meimei,{born},r1,",
        f"{exam},8103,Wang Fang,2001-05-06,r2,",
    ]
    return ("\n".join(rows) + "\n").encode()


def _file(content: bytes) -> FilePayload:
    return {"name": "roster.csv", "mimeType": "text/csv", "buffer": content}


async def _tab(page: Page, panel: str) -> None:
    await page.locator(f'#tabs button[data-panel="{panel}"]').click()
    await expect(page.locator(f"#{panel}")).to_be_visible()


async def _notice(page: Page, text: str) -> None:
    await expect(page.locator("#notice")).to_contain_text(text)
    assert await page.locator("#error").is_hidden(), await page.locator("#error").text_content()


async def test_an_organiser_runs_an_exam_from_the_console(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    organiser, _ = await new_organiser(client, runtime)
    exam = f"ex{secrets.token_hex(5)}"
    proctor = f"pro-{secrets.token_hex(4)}"
    errors: list[str] = []
    page = await new_page(
        browser, errors, viewport={"width": 1200, "height": 900}, timezone_id="UTC"
    )
    try:
        await page.goto(f"{settings.gateway_url}/organiser/")
        await expect(page.locator("#login-step")).to_be_visible()
        await screenshots_zh_en(page, "organiser-login")
        await page.locator("#username").fill(organiser)
        await page.locator("#password").fill(PASSWORD)
        await page.locator("#login-form button").click()
        await expect(page.locator("#exams-step")).to_be_visible()

        # A proctor's account, then the exam (started a minute ago, two hours long).
        await page.locator("#acc-username").fill(proctor)
        await page.locator("#acc-password").fill(PASSWORD)
        await page.locator("#acc-role").select_option("proctor")
        await page.locator("#account-form button").click()
        await _notice(page, proctor)
        now = datetime.now(UTC)
        await page.locator("#new-id").fill(exam)
        await page.locator("#new-title").fill("Mathematics")
        await page.locator("#new-starts").fill(_local(now - timedelta(minutes=1)))
        await page.locator("#new-ends").fill(_local(now + timedelta(hours=2)))
        await page.locator("#create-form button").click()
        await expect(page.locator("#exam-step")).to_be_visible()
        await expect(page.locator("#exam-state")).to_have_attribute("data-state", "running")
        await page.locator("#back").click()
        await expect(page.locator(f'#exam-list button[data-exam="{exam}"]')).to_be_visible()
        await screenshots_zh_en(page, "organiser-exams")
        await page.locator(f'#exam-list button[data-exam="{exam}"]').click()
        await expect(page.locator("#exam-step")).to_be_visible()

        # A roster with one bad row: the row's error, and nobody imported.
        await _tab(page, "panel-roster")
        roster = _file(_roster(exam, True))
        await page.locator("#roster-file").set_input_files(files=[roster])
        await page.locator("#roster-form button").click()
        await expect(page.locator("#error")).to_have_attribute("data-reason", "roster_invalid")
        bad = page.locator("#roster-errors tbody tr")
        await expect(bad).to_have_count(1)
        await expect(bad.locator("td")).to_have_text(
            ["3", "date_of_birth", "出生日期格式不正确（应为 YYYY-MM-DD）"]
        )
        assert await runtime.exams.rooms(exam) == {}
        await screenshots_zh_en(page, "organiser-roster")
        roster = _file(_roster(exam, False))
        await page.locator("#roster-file").set_input_files(files=[roster])
        await page.locator("#roster-form button").click()
        await _notice(page, "名单已导入")
        await expect(page.locator("#roster-errors")).to_be_hidden()
        await page.locator("#cand-room").select_option("r1")
        await page.locator("#candidates-form button").click()
        await expect(page.locator("#candidates tbody tr")).to_have_count(2)
        await expect(page.locator("#candidates tbody")).to_contain_text("Han Meimei")

        # The proctor, assigned by keyboard alone, sees the room; unassigned, no longer.
        await _tab(page, "panel-staff")
        await page.locator("#proctor-room").select_option("r1")
        await page.locator("#proctor-username").fill(proctor)
        await page.locator("#proctor-username").press("Enter")
        await expect(page.locator("#room-proctors")).to_contain_text(f"r1: {proctor}")
        proctor_headers = await staff_login(client, proctor)
        room_url = f"/v1/exams/{exam}/rooms/r1"
        assert (await client.get(room_url, headers=proctor_headers)).status_code == 200
        await screenshots_zh_en(page, "organiser-staff")
        await page.get_by_role("button", name=f"取消分配 r1 {proctor}").click()
        await _notice(page, "已取消分配")
        await expect(page.locator("#room-proctors li")).to_have_count(0)
        assert (await client.get(room_url, headers=proctor_headers)).status_code == 404

        # A candidate joins: the overview counts them present.
        login = await client.post("/v1/sessions", json={"exam_no": exam, "candidate_no": "8101"})
        candidate = auth(login.json()["token"])
        consent = {"policy_version": "1"}
        assert (await client.post("/v1/me/consent", json=consent, headers=candidate)).is_success
        join = await client.post("/v1/me/join", json={"network": "wifi"}, headers=candidate)
        assert join.status_code == 200, join.text
        await _tab(page, "panel-overview")
        r1 = page.locator("#overview tbody tr").filter(has_text="r1")
        await expect(r1.locator("td").nth(2)).to_have_text("1", timeout=15 * SECONDS)
        await expect(r1.locator("td").nth(3)).to_have_text("1")  # 8102 is absent
        await expect(page.locator("#overview tfoot")).to_contain_text("3")
        await screenshots_zh_en(page, "organiser-overview")

        # A new policy version: the candidate, logged in, must accept again.
        await _tab(page, "panel-policy")
        await page.locator("#policy-version").fill("2")
        await page.locator("#policy-effective").fill(_local(datetime.now(UTC)))
        await page.locator("#policy-text-zh").fill("新的隐私政策全文。")
        await page.locator("#policy-text-en").fill("The new privacy policy.")
        await page.locator("#policy-changes-zh").fill("录像保存期缩短为 14 天。")
        await page.locator("#policy-changes-en").fill("Recordings are kept 14 days.")
        await screenshots_zh_en(page, "organiser-policy")
        await page.locator("#policy-form button").click()
        await _notice(page, "新版本已发布")
        await expect(page.locator("#policy-current")).to_have_text("2")
        again = await client.post("/v1/me/join", json={"network": "wifi"}, headers=candidate)
        assert (again.status_code, again.json()["reason"]) == (403, "consent_required")

        # An edit that makes no sense is refused, in words; an extension is not.
        await _tab(page, "panel-exam")
        await page.locator("#edit-ends").fill(_local(now - timedelta(hours=1)))
        await page.locator("#edit-form button").click()
        await expect(page.locator("#error")).to_have_attribute("data-reason", "ends_before_start")
        await expect(page.locator("#error")).to_contain_text("结束时间必须晚于开始时间")
        ends_before = (await runtime.exams.get(exam)).ends_at
        await page.locator("#extend-minutes").fill("15")
        await page.locator("#extend-form button").click()
        await _notice(page, "考试已延长")
        assert (await runtime.exams.get(exam)).ends_at == ends_before + timedelta(minutes=15)
        await screenshots_zh_en(page, "organiser-settings")

        # A legal hold on the exam's first candidate; the second is removed.
        cid = runtime.exams.candidate_id(exam, "8101")
        await _tab(page, "panel-privacy")
        await page.locator("#hold-reference").fill("case-7")
        await page.locator("#hold-reason").fill("appeal by the candidate")
        await page.locator("#hold-candidate").fill(cid)
        await page.locator("#hold-form button").click()
        await _notice(page, "已设置保全")
        await expect(page.locator("#holds")).to_contain_text("case-7")
        await screenshots_zh_en(page, "organiser-privacy")
        await _tab(page, "panel-roster")
        await page.locator("#candidates-form button").click()
        remove = page.get_by_role("button", name="移除考生 8102")
        await remove.click()
        await page.get_by_role("button", name="确认移除？ 8102").click()
        await _notice(page, "已移除考生")
        await expect(page.locator("#candidates tbody tr")).to_have_count(1)
        assert await runtime.exams.candidate(exam, runtime.exams.candidate_id(exam, "8102")) is None

        # Cancelled: the live candidate's next beat is refused, and they are out.
        await _tab(page, "panel-exam")
        await page.locator("#cancel-exam").click()
        await page.locator("#cancel-confirm").click()
        await _notice(page, "考试已取消")
        await expect(page.locator("#exam-state")).to_have_attribute("data-state", "cancelled")
        beat = await client.post("/v1/me/heartbeat", json={}, headers=candidate)
        assert (beat.status_code, beat.json()["reason"]) == (403, "exam_cancelled")

        await page.locator("#logout").click()
        await expect(page.locator("#login-step")).to_be_visible()
        assert (await page.context.request.get(f"{settings.gateway_url}/v1/staff/me")).status == 401
        # Refused requests (the bad roster, the bad edit, the first visit's who-am-I) are
        # logged by the browser as failed loads; anything else (a CSP refusal, a script
        # error) is a fault of the page.
        assert [e for e in errors if not e.startswith("Failed to load resource")] == []
    finally:
        await page.context.close()
