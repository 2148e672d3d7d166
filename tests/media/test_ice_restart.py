"""ICE restart (RFC 9725 section 4.3.2): a publisher changes networks and its session goes on.

Real aiortc peers on loopback; "a new network" is another loopback address
(127.0.0.1 to 127.0.0.5). The restart happens in place
(`actors.media.aiortc.ice_restart`): new ICE credentials on both sides, new
checks, the same DTLS association and SRTP contexts, so the viewer that watches
the publisher never re-subscribes.
"""

from __future__ import annotations

import itertools
import re

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from actors.media import trickle
from actors.media.aiortc import rtc
from actors.media.sfu import Forwarder
from infra.errors import Conflict, MalformedInput
from loadtests.webrtc import begin_ice_restart
from tests.media.conftest import Stage
from tests.media.test_udp_mux import mux_forwarder, the_mux
from tests.support import webrtc
from tests.support.wait import until

OLD_HOST, NEW_HOST = "127.0.0.1", "127.0.0.5"


def longest_gap(arrivals: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)


def hosts_of(addresses: list[tuple[str, int]]) -> set[str]:
    return {host for host, _ in addresses}


async def move_and_keep_watching(stage: Stage, forwarder: Forwarder) -> None:
    publisher = await stage.publish(forwarder)
    viewer = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(viewer.indices) >= 15, within=20)
    server_pc = publisher.session.pc
    assert hosts_of(rtc.selected_remote_addresses(server_pc)) == {OLD_HOST}
    old_ufrag = publisher.session.remote_ufrag

    assert await publisher.restart_ice(forwarder, [NEW_HOST])

    # The server sends to the new address, the client's old socket is closed, the
    # publisher's ICE credentials are new; the session, its tracks and DTLS are the same.
    assert hosts_of(rtc.selected_remote_addresses(server_pc)) == {NEW_HOST}
    (client_ice,) = rtc.ice_connections(publisher.pc)
    assert {p.local_candidate.host for p in rtc.stun_protocols(client_ice)} == {NEW_HOST}
    assert publisher.session.remote_ufrag != old_ufrag
    assert forwarder.session(publisher.session.id) is publisher.session
    moved_at = len(viewer.indices)
    await until(lambda: len(viewer.indices) >= moved_at + 30, within=20)
    assert server_pc.connectionState == "connected"
    assert not any(track.ended for track in publisher.session.tracks.values())
    # In order, no more than a second of frames missing (the frames' own indices: how
    # late one arrives depends on the machine's load too).
    indices = [index for index, _ in viewer.indices]
    assert all(0 < b - a <= webrtc.FPS for a, b in itertools.pairwise(indices)), indices
    around = [t for _, t in viewer.indices[moved_at - 5 : moved_at + 5]]
    assert longest_gap(around) < 2.0, around  # the move itself stalls nothing
    assert (await forwarder.stats())["ice_restarts"] == 1


async def test_a_publisher_moves_to_a_new_address_and_its_viewer_keeps_watching(
    stage: Stage,
) -> None:
    await move_and_keep_watching(stage, stage.forwarder())


async def test_an_ice_restart_through_the_shard_port_routes_by_the_new_ufrag(
    stage: Stage,
) -> None:
    forwarder = mux_forwarder(stage)
    await move_and_keep_watching(stage, forwarder)
    mux = the_mux(forwarder)
    assert mux.routes()["connections"] == 2  # the publisher and the viewer, rekeyed in place
    (server_ice,) = rtc.ice_connections(forwarder.sessions()[0].pc)
    assert mux.holds(server_ice.local_username)


async def test_bad_restart_fragments_are_refused_and_the_session_goes_on(stage: Stage) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder)
    viewer = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(viewer.indices) >= 5, within=20)
    candidate = "1 1 udp 2130706431 127.0.0.5 40000 typ host"
    ufrag_only = "a=ice-ufrag:newufrag\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    for fragment in (
        ufrag_only,
        trickle.ice_fragment("new!", "p" * 22, "0", [candidate]),  # not ice-chars
        trickle.ice_fragment("newufrag", "short", "0", [candidate]),  # pwd under 22
    ):
        with pytest.raises(MalformedInput) as refused:
            await forwarder.patch(publisher.session.id, fragment)
        assert refused.value.reason == "bad_ice_credentials"
    # A client whose restart was refused undoes it and keeps its old path.
    restart, _ = await begin_ice_restart(publisher.pc, [NEW_HOST])
    await restart.abandon()
    shown = len(viewer.indices)
    await until(lambda: len(viewer.indices) >= shown + 15, within=20)
    assert hosts_of(rtc.selected_remote_addresses(publisher.session.pc)) == {OLD_HOST}


async def test_an_ice_restart_before_ice_connected_is_refused(stage: Stage) -> None:
    forwarder = stage.forwarder()
    peer = webrtc.sender()
    stage.peers.append(peer)
    offer = await webrtc.local_offer(peer.pc)
    _, session = await forwarder.publish(offer)  # the answer is never applied
    restart = trickle.ice_fragment("newufrag", "n" * 24, session.bundle_mid, [])
    with pytest.raises(Conflict) as refused:
        await forwarder.patch(session.id, restart)
    assert refused.value.reason == "not_connected"


def test_the_answer_fragment_is_an_rfc_8840_fragment() -> None:
    text = trickle.ice_fragment("abcd", "x" * 22, "0", ["1 1 udp 1 127.0.0.1 9 typ host"])
    parsed = trickle.parse_fragment(text)
    assert parsed.restart_credentials() == ("abcd", "x" * 22)
    assert [c.candidate for c in parsed.candidates] == ["1 1 udp 1 127.0.0.1 9 typ host"]
    assert parsed.end_of_candidates
    assert re.search(r"^m=audio 9 UDP/TLS/RTP/SAVPF 0\r$", text, re.M)


RESTART_NAMES = [name for name in rtc.PRIVATE_API if name.startswith("ice_restart_")]


@pytest.mark.parametrize("reported", RESTART_NAMES)
async def test_a_renamed_restart_detail_is_reported(
    monkeypatch: pytest.MonkeyPatch, reported: str
) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        ice = pc.addTransceiver("video").sender.transport.transport
        (connection,) = rtc.ice_connections(pc)
        name = rtc.PRIVATE_API[reported]
        if reported == "ice_restart_gatherer_remote_end":
            monkeypatch.delattr(ice.iceGatherer, name)
        elif name in vars(connection):
            monkeypatch.delattr(connection, name)
        else:  # a method
            monkeypatch.delattr(aioice.ice.Connection, name)
        assert rtc.missing_restart_api(connection, ice.iceGatherer) == [reported]
    finally:
        monkeypatch.undo()
        await pc.close()
