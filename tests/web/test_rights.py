"""The rights page: a candidate gives the biometric consent on the policy step, downloads
their data as a zip, asks for a correction and withdraws a consent, in both languages."""

from __future__ import annotations

import json
import zipfile

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from infra.settings import Settings
from tests.support.factories import new_exam
from tests.web.pages import log_in_candidate, runtime_of, screenshots_zh_en


async def test_a_candidate_downloads_their_data_and_withdraws_a_consent(
    browser: Browser, client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["6001"]}, with_proctors=False)
    errors: list[str] = []
    page = await log_in_candidate(browser, settings, world.exam_id, "6001", errors)
    try:
        # The policy step shows the stored text and the separate biometric consent.
        await expect(page.locator("#policy-stored")).not_to_be_empty()
        await expect(page.locator("#biometric-choice")).to_be_visible()
        await page.locator("#accept").check()
        await page.locator("#biometric-accept").check()
        await page.locator("#policy-form button").click()
        await expect(page.locator("#check-step")).to_be_visible()

        await page.goto(f"{settings.gateway_url}/candidate/rights.html")
        await expect(page.locator("#withdraw-biometric")).to_be_enabled()
        await expect(page.locator("#contact")).not_to_be_empty()
        async with page.expect_download() as started:
            await page.locator("#download").click()
        download = await started.value
        with zipfile.ZipFile(str(await download.path())) as archive:
            assert json.loads(archive.read("identity.json"))["name"] == "Candidate 6001"
            consents = json.loads(archive.read("consents.json"))
            assert [(c["kind"], c["value"]) for c in consents] == [
                ("policy", "1"),
                ("biometric", "granted:b1"),
            ]
            assert "manifest.json" in archive.namelist()

        await page.locator("#request-text").fill("我的名字写错了 / my name is misspelt")
        await page.locator("#request-form button").click()
        await expect(page.locator("#requests li")).to_have_count(1)

        await page.locator("#withdraw-biometric").click()
        await expect(page.locator("#confirm-meaning")).to_contain_text("人脸模板")
        await screenshots_zh_en(page, "rights")
        await page.locator("#confirm").click()
        await expect(page.locator("#status")).to_have_text("已撤回。")
        await expect(page.locator("#withdraw-biometric")).to_be_disabled()
        me = await page.evaluate("fetch('/v1/me').then((r) => r.json())")
        assert me["biometric_consent"] is None
        assert me["biometric_refused"] is True
        unlabelled = await page.evaluate(
            "[...document.querySelectorAll('input, select, textarea')]"
            ".filter((e) => e.labels.length === 0).map((e) => e.id)"
        )
        assert unlabelled == []
        # CSP refusals and uncaught errors; the 401 of the exam page's first look before
        # its login is the page's own, not this one's.
        assert [e for e in errors if not e.startswith("Failed to load resource")] == []
    finally:
        await page.context.close()
