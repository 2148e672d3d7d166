"""A real Chromium (Debian's, driven by Playwright) with fake camera and microphone."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
# Fake devices (an animated test pattern and a tone), and nothing that phones home.
# Loopback candidates are allowed and mDNS names are off, so ICE pairs on 127.0.0.1.
ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(gateway: FastAPI) -> AsyncIterator[Browser]:
    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()
