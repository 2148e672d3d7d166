"""The pages send a request that a full gateway refused at the door (503
`gateway_busy`, nothing ran) again after its Retry-After (`web/common/http.js`), once."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from playwright.async_api import Browser

from infra.settings import Settings
from tests.support import held
from tests.web.pages import new_page

SEND_FROM_PAGE = """
async (text) => {
  const http = await import('/common/http.js');
  return http.post('/test-work', { text });
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
