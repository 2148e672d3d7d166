"""A simulated camera counts as published only once its connection is up: a
session that stays unconnected, or fails, is reported so and published again."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCSessionDescription

from actors.media.aiortc.rtc import ScopedPeerConnection
from loadtests import journey
from loadtests.webrtc import WhipSession

LOOPBACK = ("127.0.0.1",)


async def test_a_session_that_never_connects_is_given_up_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(journey, "CONNECT_S", 0.5)
    pc = ScopedPeerConnection(LOOPBACK)
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # answered by nobody
    began = time.monotonic()
    try:
        assert not await journey._connected(WhipSession(pc, "", None))
    finally:
        await pc.close()
    assert time.monotonic() - began < 2.0


async def test_a_closed_session_is_not_connected() -> None:
    pc = ScopedPeerConnection(LOOPBACK)
    await pc.close()
    assert not await asyncio.wait_for(journey._connected(WhipSession(pc, "", None)), 1.0)


async def test_a_session_whose_peer_answers_is_connected() -> None:
    offerer, answerer = ScopedPeerConnection(LOOPBACK), ScopedPeerConnection(LOOPBACK)
    try:
        offerer.addTransceiver("audio", direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(
            RTCSessionDescription(offerer.localDescription.sdp, "offer")
        )
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(
            RTCSessionDescription(answerer.localDescription.sdp, "answer")
        )
        assert await journey._connected(WhipSession(offerer, "", None))
    finally:
        await offerer.close()
        await answerer.close()
