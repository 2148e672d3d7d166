"""Fixtures of the media tests: forwarders and real peers, all closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import pytest_asyncio

from actors.media.sfu import Forwarder
from infra.settings.media import MediaSettings
from tests.support import webrtc


class Closeable(Protocol):
    async def close(self) -> None: ...


class Stage:
    """Makes forwarders and peers for one test and closes them all afterwards."""

    def __init__(self) -> None:
        self.forwarders: list[Forwarder] = []
        self.peers: list[Closeable] = []

    def forwarder(
        self, forwarder_kwargs: dict[str, Any] | None = None, **settings: Any
    ) -> Forwarder:
        values: dict[str, Any] = {"recording_enabled": False}
        values.update(settings)
        forwarder = Forwarder(MediaSettings(**values), **(forwarder_kwargs or {}))
        self.forwarders.append(forwarder)
        return forwarder

    async def publish(self, forwarder: Forwarder, **kwargs: Any) -> webrtc.Publisher:
        publisher = await webrtc.publish(forwarder, **kwargs)
        self.peers.append(publisher)
        return publisher

    async def view(
        self, forwarder: Forwarder, sources: Sequence[str], **kwargs: Any
    ) -> webrtc.Viewer:
        viewer = await webrtc.view(forwarder, sources, **kwargs)
        self.peers.append(viewer)
        return viewer

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
        for forwarder in self.forwarders:
            await forwarder.close()


@pytest_asyncio.fixture
async def stage() -> AsyncIterator[Stage]:
    current = Stage()
    try:
        yield current
    finally:
        await current.close()
