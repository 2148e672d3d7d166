"""The pages send a request that a full gateway refused at the door (503
`gateway_busy`, nothing ran) again after its Retry-After (`web/common/http.js`), once;
WebRTC offers included (`web/common/webrtc.js`)."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from playwright.async_api import Browser, Route

from infra.settings import Settings
from tests.support import held
from tests.support.factories import new_exam
from tests.web.pages import new_page, open_candidate, runtime_of

SEND_FROM_PAGE = """
async (text) => {
  const http = await import('/common/http.js');
  return http.post('/test-work', { text });
}
"""

# The device check's WHIP probe, as the candidate page sends it.
PUBLISH_FROM_PAGE = """
async () => {
  const { publish } = await import('/common/webrtc.js');
  const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const link = await publish('/v1/whip/me/probe', stream);
  const location = link.location;
  await link.close();
  return location;
}
"""


async def test_a_page_sends_a_refused_request_again_after_retry_after(
    browser: Browser, app: FastAPI, settings: Settings
) -> None:
    held.add_held_routes(app)
    gate = held.Gate.closed()
    errors: list[str] = []
    page = await new_page(browser, errors)
    try:
        await page.goto(f"{settings.gateway_url}/candidate/")
        with held.admission_limit(app) as limit:
            async with held.many_connections(settings, limit + 8) as http:
                holding = await held.fill(http, limit)
                before = held.refused()
                sent = asyncio.ensure_future(page.evaluate(SEND_FROM_PAGE, "from the page"))
                await held.until_refused(before, sent)
                assert "from the page" not in held.RAN
                gate.set()
                assert [r.status_code for r in await asyncio.gather(*holding)] == [200] * limit
                assert await asyncio.wait_for(sent, 30) == {"text": "from the page"}
        assert held.RAN.count("from the page") == 1
    finally:
        gate.set()
        await page.context.close()


async def test_a_webrtc_offer_refused_at_the_door_is_sent_again(
    browser: Browser, app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["5301"]})
    held.add_held_routes(app)
    gate = held.Gate.closed()
    page = await open_candidate(browser, settings, world.exam_id, "5301", biometric=False)
    offered, let_through = asyncio.Event(), asyncio.Event()

    async def hold_the_first_offer(route: Route) -> None:
        # The offer reaches the gateway once the test has filled it.
        if route.request.method == "POST" and not offered.is_set():
            offered.set()
            await let_through.wait()
        await route.continue_()

    await page.route("**/v1/whip/me/probe", hold_the_first_offer)
    try:
        published = asyncio.ensure_future(page.evaluate(PUBLISH_FROM_PAGE))
        await asyncio.wait_for(offered.wait(), 30)
        with held.admission_limit(app) as limit:
            async with held.many_connections(settings, limit + 8) as http:
                holding = await held.fill(http, limit)
                before = held.refused()
                let_through.set()
                await held.until_refused(before, published)
                gate.set()
                await asyncio.gather(*holding)
                location = await asyncio.wait_for(published, 60)
        assert location.startswith("/v1/whip/sessions/"), location
    finally:
        let_through.set()
        gate.set()
        await page.context.close()
