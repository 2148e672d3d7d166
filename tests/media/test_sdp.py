"""Offers the forwarder must refuse, before it allocates anything."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiortc import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket

from actors.media import codec_choice, sdp, trickle
from actors.media.aiortc import rtc
from actors.media.sfu import Forwarder
from infra.errors import (
    BadRequest,
    ExamdayError,
    InvalidInput,
    MalformedInput,
    NotFound,
    Unavailable,
    UnsupportedMediaType,
)
from tests.media.conftest import Stage
from tests.support.wait import until
from tests.support.webrtc import LOOPBACK, local_offer

FINGERPRINT = (
    "sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE"
    ":DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC"
)
# Shaped like a browser's WHIP offer: several codecs, mDNS and public candidates.
BROWSER_OFFER = f"""v=0
o=- 4215775240449105457 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1 1 udp 2122260223 f3c3b8a2-6c2f-4d3e-9a4c-2b1d1e0c9f11.local 54321 typ host
a=candidate:2 1 udp 1686052607 203.0.113.7 54321 typ srflx raddr 0.0.0.0 rport 0
a=candidate:3 1 udp 2122260223 127.0.0.1 50000 typ host
a=ice-ufrag:Xk2b
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=ice-options:trickle
a=fingerprint:{FINGERPRINT}
a=setup:actpass
a=mid:0
a=sendonly
a=msid:- a1
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=ssrc:1001 cname:x
m=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97
c=IN IP4 0.0.0.0
a=ice-ufrag:Xk2b
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=fingerprint:{FINGERPRINT}
a=setup:actpass
a=mid:1
a=sendonly
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:102 H264/90000
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=ssrc-group:FID 2002 2003
a=ssrc:2002 cname:x
a=ssrc:2003 cname:x
"""


def test_browser_offer_is_parsed() -> None:
    offer = sdp.parse_offer(BROWSER_OFFER)
    sdp.check_publish(offer)
    audio, video = offer.media
    assert (audio.kind, audio.mid, audio.direction) == ("audio", "0", "sendonly")
    assert audio.rtcp_mux
    assert [c.name for c in video.codecs] == ["H264", "rtx", "VP8", "rtx"]
    assert video.codecs[0].parameters["profile-level-id"] == "42e01f"
    assert video.ssrcs == (2002, 2003)
    assert offer.bundle == ("0", "1")
    assert offer.ice_ufrag == "Xk2b"
    assert len(audio.candidates) == 3


def test_codec_choice_follows_the_offer_order_among_forwardable_codecs() -> None:
    video = sdp.parse_offer(BROWSER_OFFER).media[1]
    assert [
        c.mimeType for c in codec_choice.codec_preferences("video", video.codecs, ["VP8", "H264"])
    ] == [
        "video/H264",
        "video/rtx",
    ]
    assert codec_choice.codec_preferences("video", video.codecs, ["VP8"])[0].mimeType == "video/VP8"
    audio = sdp.parse_offer(BROWSER_OFFER).media[0]
    assert [
        c.mimeType for c in codec_choice.codec_preferences("audio", audio.codecs, ["opus"])
    ] == ["audio/opus"]


async def offer_of(
    kinds: list[str], codecs: dict[str, list[str]] | None = None, direction: str = "sendonly"
) -> str:
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    try:
        for kind in kinds:
            transceiver = pc.addTransceiver(kind, direction=direction)
            if codecs and kind in codecs:
                wanted = codecs[kind]
                capabilities = RTCRtpSender.getCapabilities(kind).codecs
                transceiver.setCodecPreferences([c for c in capabilities if c.mimeType in wanted])
        return await local_offer(pc)
    finally:
        await pc.close()


def without(text: str, pattern: str) -> str:
    return "\r\n".join(line for line in text.splitlines() if not re.match(pattern, line))


async def refused(
    forwarder: Forwarder, offer: str, content_type: str = "application/sdp"
) -> ExamdayError:
    with pytest.raises(ExamdayError) as caught:
        await forwarder.publish(offer, content_type=content_type)
    assert forwarder.peer_connections_created == 0
    assert forwarder.live_peer_connections == 0
    return caught.value


async def test_bad_offers_are_refused_before_any_peer_connection(stage: Stage) -> None:
    forwarder = stage.forwarder()
    good = await offer_of(["audio", "video"])

    error = await refused(forwarder, good, content_type="text/plain")
    assert isinstance(error, UnsupportedMediaType)
    assert error.status == 415

    for garbage in ("hello", "v=0\r\nm=video x\r\n", good.replace("v=0", "v=1"), ""):
        error = await refused(forwarder, garbage)
        assert isinstance(error, MalformedInput)
        assert error.reason == "malformed_sdp"

    cases = {
        "too_many_tracks": await offer_of(["audio", "video", "video"]),
        "bundle_required": without(good, r"a=group:BUNDLE"),
        "rtcp_mux_required": without(good, r"a=rtcp-mux"),
        "unsupported_codec": await offer_of(["audio"], {"audio": ["audio/PCMU"]}),
    }
    for reason, offer in cases.items():
        error = await refused(forwarder, offer)
        assert isinstance(error, InvalidInput), reason
        assert (error.reason, error.status) == (reason, 422)


async def test_a_full_shard_says_when_to_retry(stage: Stage) -> None:
    forwarder = stage.forwarder(max_sessions=1, retry_after_s=7)
    await stage.publish(forwarder)
    with pytest.raises(Unavailable) as caught:
        await forwarder.publish(await offer_of(["audio", "video"]))
    error = caught.value
    assert (error.reason, error.retry_after, error.status) == ("shard_full", 7, 503)
    assert forwarder.peer_connections_created == 1


async def test_subscribe_refusals(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)  # VP8 + Opus
    created = forwarder.peer_connections_created
    h264_only = await offer_of(["video"], {"video": ["video/H264"]}, direction="recvonly")
    with pytest.raises(InvalidInput) as caught:
        await forwarder.subscribe(h264_only, [publisher.session.id])
    assert caught.value.reason == "codec_mismatch"
    with pytest.raises(NotFound):
        await forwarder.subscribe(await offer_of(["video"], direction="recvonly"), ["nobody"])
    with pytest.raises(InvalidInput) as caught:  # a viewer must receive, not send
        await forwarder.subscribe(await offer_of(["video"]), [publisher.session.id])
    assert caught.value.reason == "wrong_direction"
    assert forwarder.peer_connections_created == created


def test_bandwidth_feedback_is_taken_out_of_a_viewer_offer() -> None:
    offer = "\r\n".join(
        [
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "a=extmap:3/recvonly http://www.ietf.org/id/"
            "draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=rtcp-fb:96 goog-remb",
            "a=rtcp-fb:* transport-cc",
            "a=rtcp-fb:96 nack",
            "a=rtcp-fb:96 nack pli",
            "a=rtcp-fb:96 ccm fir",
        ]
    )
    assert sdp.without_bandwidth_feedback(offer).split("\r\n") == [
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
    ]


def remb_counter(pc: rtc.ScopedPeerConnection) -> list[int]:
    """Counts the REMB packets the video receiver of `pc` sends from now on."""
    receiver = next(t.receiver for t in pc.getTransceivers() if t.kind == "video")
    sent = [0]

    def count(packet: Any) -> None:
        sent[0] += isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP

    rtc.tap_rtcp(receiver, count)
    return sent


async def test_viewers_are_not_asked_for_bandwidth_estimates_publishers_are(
    stage: Stage,
) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    viewer = await stage.view(forwarder, [publisher.session.id])
    # aiortc offers REMB and abs-send-time on both sides; the shard keeps them from its
    # publisher (they pace its encoder) and drops them for a viewer (it would discard them).
    published = str(publisher.pc.remoteDescription.sdp)
    assert "goog-remb" in published
    assert "abs-send-time" in published
    watched = str(viewer.pc.remoteDescription.sdp)
    assert "goog-remb" not in watched
    assert "abs-send-time" not in watched
    assert "nack pli" in watched
    from_shard, from_viewer = remb_counter(publisher.session.pc), remb_counter(viewer.pc)
    await until(lambda: from_shard[0] >= 2 and len(viewer.indices) >= 15)
    assert from_viewer[0] == 0


# -- line breaks and candidates aiortc would see but our checks would not ---------------

# An address outside the networks the tests below allow (127.0.0.1/32): loopback all the same.
HIDDEN_CANDIDATE = "a=candidate:9 1 udp 2130706431 127.0.0.9 9 typ host"
# Where `str.splitlines` (aiortc's line splitter) breaks a line besides LF and CRLF.
LINE_BREAKS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def hide(text: str, separator: str = "\r") -> str:
    """`text` with a candidate line after `separator` in a line of its own (after a=mid:0)."""
    note = f"a=x-note{separator}{HIDDEN_CANDIDATE}"
    return re.sub(r"(a=mid:0\r?\n)", lambda m: f"{m[1]}{note}\r\n", text, count=1)


def with_candidates(text: str, count: int) -> str:
    """`text` (SDP) with exactly `count` candidates on 127.0.0.1, all after its a=mid:0."""
    lines = [
        f"a=candidate:{n} 1 udp 2130706431 127.0.0.1 {40000 + n} typ host" for n in range(count)
    ]
    bare = without(text, r"a=candidate:")
    return re.sub(r"a=mid:0(?=\r?\n|$)", lambda m: "\r\n".join([m[0], *lines]), bare, count=1)


@pytest.mark.parametrize("separator", [*LINE_BREAKS, "\x00", "\x07", "\x1b", "\x7f"])
def test_line_breaks_but_lf_and_crlf_and_control_characters_are_refused(separator: str) -> None:
    crlf = BROWSER_OFFER.replace("\n", "\r\n")  # LF and CRLF line ends read alike
    assert sdp.parse_offer(crlf).media == sdp.parse_offer(BROWSER_OFFER).media
    assert sdp.without_lines(BROWSER_OFFER, lambda line: False) == crlf
    offer = hide(BROWSER_OFFER, separator)
    assert separator not in LINE_BREAKS or HIDDEN_CANDIDATE in offer.splitlines()
    with pytest.raises(MalformedInput) as caught:
        sdp.parse_offer(offer)
    assert (caught.value.reason, caught.value.status) == ("bad_sdp", 400)
    with pytest.raises(MalformedInput) as caught:
        trickle.parse_fragment(hide("a=mid:0\r\na=end-of-candidates\r\n", separator))
    assert caught.value.reason == "bad_sdp"
    with pytest.raises(MalformedInput):  # and whatever rewrites lines refuses them too
        sdp.without_lines(offer, lambda line: False)


async def test_a_candidate_hidden_behind_a_bare_cr_never_reaches_ice(stage: Stage) -> None:
    # Only 127.0.0.1 may be dialled; before this was refused aiortc got 127.0.0.9 9.
    forwarder = stage.forwarder(allowed_remote_networks=("127.0.0.1/32",))
    error = await refused(forwarder, hide(await offer_of(["audio", "video"])))
    assert (error.reason, error.status) == ("bad_sdp", 400)
    _, session = await forwarder.publish(await offer_of(["audio", "video"]))
    with pytest.raises(MalformedInput) as caught:
        await forwarder.patch(session.id, hide("a=mid:0\r\na=end-of-candidates\r\n"))
    assert caught.value.reason == "bad_sdp"


async def test_offers_and_fragments_with_too_many_candidates_are_refused(stage: Stage) -> None:
    forwarder = stage.forwarder(max_offer_candidates=3, max_patch_candidates=2)
    offer = await offer_of(["audio", "video"])
    error = await refused(forwarder, with_candidates(offer, 4))
    assert (error.reason, error.status) == ("too_many_candidates", 400)
    _, session = await forwarder.publish(with_candidates(offer, 3))
    with pytest.raises(BadRequest) as caught:
        await forwarder.patch(session.id, with_candidates("a=mid:0\r\n", 3))
    assert (caught.value.reason, caught.value.status) == ("too_many_candidates", 400)
    await forwarder.patch(session.id, with_candidates("a=mid:0\r\n", 2))
