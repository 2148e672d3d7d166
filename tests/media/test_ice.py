"""ICE stays on the allowed addresses; trickle ICE by PATCH (RFC 8840)."""

from __future__ import annotations

import re

import pytest
from aiortc import RTCSessionDescription

from actors.media import trickle
from actors.media.aiortc import rtc
from infra.errors import Conflict, UnsupportedMediaType
from tests.media.conftest import Stage
from tests.media.test_sdp import BROWSER_OFFER, offer_of
from tests.support.wait import until
from tests.support.webrtc import LOOPBACK, IndexedVideoTrack, ToneAudioTrack, local_offer

FRAGMENT = """a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:0
a=candidate:1387637174 1 udp 2122260223 127.0.0.1 61764 typ host generation 0 ufrag EsAw
a=candidate:3471623853 1 udp 2122194687 f3c3.local 61765 typ host generation 0 ufrag EsAw
a=end-of-candidates
"""


def candidate_hosts(text: str) -> list[str]:
    return [trickle.candidate_address(m) for m in re.findall(r"^a=candidate:(.*)$", text, re.M)]


async def test_answer_offers_only_the_configured_addresses(stage: Stage) -> None:
    forwarder = stage.forwarder(host_addresses=("127.0.0.2",))
    answer, _ = await forwarder.publish(await offer_of(["audio", "video"]))
    hosts = candidate_hosts(answer)
    assert hosts
    assert set(hosts) == {"127.0.0.2"}
    # The same in the default settings, which aioice alone would never gather on.
    answer, _ = await stage.forwarder().publish(await offer_of(["audio", "video"]))
    assert set(candidate_hosts(answer)) == {"127.0.0.1"}


def test_remote_candidates_outside_allowed_networks_are_dropped() -> None:
    allow = trickle.address_filter(["127.0.0.0/8"])
    kept = trickle.drop_candidates(BROWSER_OFFER, allow)
    assert candidate_hosts(kept) == ["127.0.0.1"]  # no mDNS name, no public address
    assert "a=rtpmap:96 VP8/90000" in kept


async def test_forwarder_filters_offered_candidates(stage: Stage) -> None:
    forwarder = stage.forwarder(allowed_remote_networks=("127.0.0.9/32",))
    _, session = await forwarder.publish(await offer_of(["video"]))
    assert candidate_hosts(session.pc.remoteDescription.sdp) == []


def test_fragment_parsing_and_restart_detection() -> None:
    fragment = trickle.parse_fragment(FRAGMENT)
    assert (fragment.ufrag, fragment.pwd, fragment.end_of_candidates) == (
        "EsAw",
        "P2uYro0UCOQ4zxjKXaWCBui1",
        True,
    )
    assert [(c.mid, c.mline_index) for c in fragment.candidates] == [("0", 0), ("0", 0)]
    assert not fragment.is_restart("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert fragment.is_restart("old", "P2uYro0UCOQ4zxjKXaWCBui1")
    assert not trickle.parse_fragment("a=end-of-candidates\r\n").is_restart("any", "thing")


async def test_trickled_candidates_connect_a_publisher(stage: Stage) -> None:
    forwarder = stage.forwarder()
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    stage.peers.append(pc)
    pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    pc.addTransceiver(IndexedVideoTrack(), direction="sendonly")
    offer = await local_offer(pc)
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
    bare = "\r\n".join(
        line for line in offer.splitlines() if not line.startswith(("a=candidate:", "a=end-of"))
    )
    answer, session = await forwarder.publish(bare)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    ufrag = re.search(r"a=ice-ufrag:(\S+)", offer)
    pwd = re.search(r"a=ice-pwd:(\S+)", offer)
    assert ufrag
    assert pwd
    assert candidates
    with pytest.raises(UnsupportedMediaType):
        await forwarder.patch(session.id, "a=end-of-candidates", content_type="application/sdp")
    restart = f"a=ice-ufrag:new1\r\na=ice-pwd:{'x' * 24}\r\n"
    with pytest.raises(Conflict) as caught:  # ICE restarts once connected (test_ice_restart.py)
        await forwarder.patch(session.id, restart)
    assert caught.value.reason == "not_connected"

    fragment = "\r\n".join(
        # Candidates under the second m-line's mid: they still reach the bundle.
        [
            f"a=ice-ufrag:{ufrag[1]}",
            f"a=ice-pwd:{pwd[1]}",
            "m=video 9 UDP/TLS/RTP/SAVPF 0",
            "a=mid:1",
            *candidates,
            "a=end-of-candidates",
            "",
        ]
    )
    await forwarder.patch(session.id, fragment)
    await until(lambda: session.connection_state == "connected")
    await until(lambda: session.tracks["video"].frames_in > 5)


async def test_a_session_that_never_connects_is_released(stage: Stage) -> None:
    forwarder = stage.forwarder(connect_timeout_s=0.3)
    _, session = await forwarder.publish(await offer_of(["audio", "video"]))  # nobody answers
    assert forwarder.live_peer_connections == 1
    await until(lambda: forwarder.live_peer_connections == 0)
    assert session.pc.connectionState == "closed"
