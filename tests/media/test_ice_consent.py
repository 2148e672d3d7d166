"""ICE consent (RFC 7675): slow answers keep a connection; 30 s of silence (here: 2 s) ends it."""

from __future__ import annotations

import asyncio
from typing import Any

import aioice.ice
import pytest
from aioice import stun
from aioice.ice import Connection

from actors.media.aiortc import ice_consent, rtc
from tests.support.webrtc import LOOPBACK

QUICK = ice_consent.ConsentPolicy(interval_s=0.3, timeout_s=2.0, retransmissions=2)
# aioice's own rule at the same pace: one try, no retransmission.
AIOICE_LIKE = ice_consent.ConsentPolicy(interval_s=0.3, timeout_s=2.0, retransmissions=0)


async def connected_pair(policy: ice_consent.ConsentPolicy) -> tuple[Connection, Connection]:
    rtc.install()
    checker, answerer = Connection(ice_controlling=True), Connection(ice_controlling=False)
    setattr(checker, ice_consent.POLICY_ATTRIBUTE, policy)
    # The answerer's own checks must not be what ends the connection here.
    setattr(answerer, ice_consent.POLICY_ATTRIBUTE, ice_consent.ConsentPolicy(interval_s=60))
    with rtc.gathering_on(LOOPBACK):
        await asyncio.gather(checker.gather_candidates(), answerer.gather_candidates())
    for near, far in ((checker, answerer), (answerer, checker)):
        for candidate in far.local_candidates:
            await near.add_remote_candidate(candidate)
        await near.add_remote_candidate(None)
        near.remote_username, near.remote_password = far.local_username, far.local_password
    await asyncio.wait_for(asyncio.gather(checker.connect(), answerer.connect()), 10)
    return checker, answerer


def answer_late(connection: Connection, delay_s: float | None) -> None:
    """Fake a busy (or, with None, silent) peer: its STUN answers leave late, or never."""
    loop = asyncio.get_running_loop()
    for protocol in rtc.stun_protocols(connection):
        send = protocol.send_stun

        def late(message: stun.Message, addr: Any, send: Any = send) -> None:
            if message.message_class != stun.Class.RESPONSE:
                send(message, addr)
            elif delay_s is not None:
                loop.call_later(delay_s, send, message, addr)

        protocol.send_stun = late  # type: ignore[method-assign]


async def still_connected(checker: Connection, answerer: Connection) -> bool:
    try:
        await checker.send(b"still there?")
    except ConnectionError:
        return False
    data = await asyncio.wait_for(answerer.recv(), 2)
    return data == b"still there?"


@pytest.mark.parametrize(
    ("policy", "answer_delay_s", "kept"),
    [
        (QUICK, 0.7, True),  # answers after aioice's 0.5 s arrive within a retransmission
        (AIOICE_LIKE, 0.7, False),  # what aioice did: each late answer counted as none
        (QUICK, None, False),  # a peer gone silent loses consent once timeout_s has passed
    ],
)
async def test_consent_lapses_only_after_the_timeout_without_an_answer(
    policy: ice_consent.ConsentPolicy, answer_delay_s: float | None, kept: bool
) -> None:
    checker, answerer = await connected_pair(policy)
    try:
        answer_late(answerer, answer_delay_s)
        await asyncio.sleep(policy.timeout_s + 3 * policy.interval_s + 3.5)
        assert await still_connected(checker, answerer) is kept
    finally:
        await asyncio.gather(checker.close(), answerer.close())


async def test_a_peer_connection_uses_the_rfc_consent_rule() -> None:
    await rtc.ScopedPeerConnection(LOOPBACK).close()
    consent_check = getattr(aioice.ice.Connection, rtc.PRIVATE_API["consent_check"])
    assert consent_check.__module__ == ice_consent.__name__
    assert ice_consent.ConsentPolicy() == ice_consent.ConsentPolicy(5.0, 30.0, 2)
