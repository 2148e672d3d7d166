"""The candidate page's states: a minor without a guardian's consent, messages from the
proctor, and the connection dropping and coming back."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from api.media_http import close_quietly
from core import keys
from infra.settings import Settings
from tests.support.factories import new_exam
from tests.web.pages import SECONDS, log_in_candidate, open_candidate, pass_checks, runtime_of


async def test_a_minor_waits_for_a_guardian(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(
        client, runtime_of(app), {"r1": ["2001"]}, with_proctors=False, born={"2001": "2015-06-01"}
    )
    page = await log_in_candidate(browser, settings, world.exam_id, "2001")
    try:
        await expect(page.locator("#guardian")).to_be_visible()
        unlabelled = await page.evaluate(
            "[...document.querySelectorAll('input, select')]"
            ".filter((e) => e.labels.length === 0).map((e) => e.id)"
        )
        assert unlabelled == []
        await page.locator("#accept").check()
        await page.locator("#biometric-accept").check()
        await page.locator("#policy-form button").click()
        # The candidate's own consent is recorded; the page waits for the guardian's.
        await expect(page.locator("#guardian-wait")).to_be_visible()
        await expect(page.locator("#policy-form")).to_be_hidden()
        await expect(page.locator("#check-step")).to_be_hidden()
        me = await page.evaluate("fetch('/v1/me').then((r) => r.json())")
        assert me["needs_consent"] is False
        assert me["needs_guardian_consent"] is True

        # The one-time link to pass on; the guardian consents with it on their own device,
        # and the candidate's page moves on by itself.
        await page.locator("#guardian-make").click()
        link = page.locator("#guardian-url")
        await expect(link).to_have_value(re.compile(r"/candidate/guardian\.html#token=\S+"))
        token = (await link.input_value()).split("#token=", 1)[1]
        consented = await client.post("/v1/guardian/consent", json={"token": token, "accept": True})
        assert consented.status_code == 204, consented.text
        await expect(page.locator("#check-step")).to_be_visible(timeout=15 * SECONDS)
        await expect(page.locator("#guardian")).to_be_hidden()
        # The biometric choice made before the wait counts now, with the guardian's consent.
        me = await page.evaluate("fetch('/v1/me').then((r) => r.json())")
        assert me["needs_guardian_consent"] is False
        assert me["biometric_consent"], me
        assert not me["biometric_refused"]
        await expect(page.locator("#error")).to_be_hidden()
    finally:
        await page.context.close()


async def test_messages_and_a_dropped_connection(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["3001"]})
    page = await open_candidate(browser, settings, world.exam_id, "3001")
    try:
        await pass_checks(page)
        sent = await client.post(
            f"/v1/exams/{world.exam_id}/rooms/r1/messages",
            json={"text": "还有十分钟 / ten minutes left"},
            headers=world.proctors["r1"],
        )
        assert sent.status_code == 201, sent.text
        await expect(page.locator("#messages li")).to_have_text(
            ["还有十分钟 / ten minutes left"], timeout=15 * SECONDS
        )

        await page.context.set_offline(True)
        await expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
        await page.context.set_offline(False)
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=15 * SECONDS
        )

        # A reload keeps the HttpOnly session: the page resumes after the login form.
        await page.reload()
        await expect(page.locator("#check-step")).to_be_visible()
    finally:
        await page.context.close()


async def test_a_dropped_media_link_is_published_again(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["4001"]}, with_proctors=False)
    runtime = runtime_of(app)
    pointer = keys.media_publisher_key(world.exam_id, world.candidate_ids["4001"], "camera")
    page = await open_candidate(browser, settings, world.exam_id, "4001")
    try:
        await pass_checks(page)
        first = await runtime.media.sessions.current(pointer)
        assert first is not None
        # The shard ends the session, as when it drains or loses the peer: the page
        # says the link is lost, then publishes again by itself.
        await close_quietly(runtime, first)
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "lost", timeout=60 * SECONDS
        )
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", "live", timeout=60 * SECONDS
        )
        again = await runtime.media.sessions.current(pointer)
        assert again is not None
        assert again.id != first.id
    finally:
        await page.context.close()
