"""A real Chromium (Debian's, driven by Playwright) with fake camera and microphone."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright, expect

from tests.media.gateway.conftest import media  # noqa: F401  (the playback test's shard)
from tests.web.camera import FakeCamera

CHROMIUM = "/usr/bin/chromium"
# What a page shows after a click or an answer may take a few seconds on a CI machine
# running the whole stack on 2 cores (Playwright's default is 5 s); an assertion still
# fails when the page never shows it.
expect.set_options(timeout=15_000)
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


@contextlib.asynccontextmanager
async def chromium(*extra: str, executable: str = CHROMIUM) -> AsyncIterator[Browser]:
    """Debian's Chromium; `executable` may be a wrapper that runs it elsewhere (a namespace)."""
    if shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=[*ARGS, *extra]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(gateway: FastAPI) -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def camera(tmp_path_factory: pytest.TempPathFactory) -> FakeCamera:
    path = tmp_path_factory.mktemp("camera") / "face.y4m"
    return await asyncio.to_thread(FakeCamera.create, path)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def face_browser(gateway: FastAPI, camera: FakeCamera) -> AsyncIterator[Browser]:
    """A Chromium whose camera films `camera`'s clip: a real face instead of a test pattern."""
    async with chromium(f"--use-file-for-fake-video-capture={camera.path}") as launched:
        yield launched
