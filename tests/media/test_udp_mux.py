"""One UDP port per media shard (ICE mux), and the addresses a shard binds and announces."""

from __future__ import annotations

import re
import socket
from typing import Any

import aioice
import pytest
from aioice import stun
from aioice.utils import random_transaction_id

from actors.media import trickle
from actors.media.aiortc import rtc
from actors.media.aiortc.udp_mux import UdpMux
from actors.media.sfu import Forwarder
from infra.errors import Unavailable
from infra.settings.media import MediaSettings
from tests.media.conftest import Stage
from tests.media.test_sdp import offer_of
from tests.support.wait import until

SPAN = 32  # ports tried from the one found free, should another process take it meanwhile


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def candidates(text: str) -> list[tuple[str, int]]:
    found = re.findall(r"^a=candidate:(.*)$", text, re.M)
    return [(trickle.candidate_address(c), int(c.split()[5])) for c in found]


def mux_forwarder(stage: Stage, **settings: Any) -> Forwarder:
    return stage.forwarder(udp_port=free_port(), udp_port_span=SPAN, **settings)


def the_mux(forwarder: Forwarder) -> UdpMux:
    (mux,) = forwarder.muxes.values()
    return mux


@pytest.mark.parametrize("batch_reads", [True, False])
async def test_publishers_from_one_address_share_the_shard_port(
    stage: Stage, batch_reads: bool
) -> None:
    forwarder = mux_forwarder(stage, udp_batch_reads=batch_reads)
    first = await stage.publish(forwarder)
    second = await stage.publish(forwarder)
    mux = the_mux(forwarder)
    for publisher in (first, second):
        assert set(candidates(publisher.pc.remoteDescription.sdp)) == {("127.0.0.1", mux.port)}
    viewers = [await stage.view(forwarder, [p.session.id]) for p in (first, second)]
    for viewer in viewers:
        assert set(candidates(viewer.pc.remoteDescription.sdp)) == {("127.0.0.1", mux.port)}

    # Both publishers are on 127.0.0.1, on ports of their own: routed apart, both seen.
    await until(lambda: all(len(v.indices) > 10 for v in viewers), within=20)
    learned = [_learned(mux, p.session.pc) for p in (first, second)]
    assert all(learned)
    assert not set(learned[0]) & set(learned[1])
    assert {host for addresses in learned for host, _ in addresses} == {"127.0.0.1"}
    assert mux.routes()["connections"] == 4
    stats = await forwarder.stats()
    assert stats["udp_mux_addresses_learned"] >= 4
    assert stats.get("udp_mux_dropped_unknown_source", 0) == 0


def _learned(mux: UdpMux, pc: rtc.ScopedPeerConnection) -> list[tuple[str, int]]:
    """The remote addresses `mux` routes to `pc`'s ICE connection."""
    return [a for c in rtc.ice_connections(pc) for a in mux.addresses_of(c)]


async def test_routes_are_forgotten_when_sessions_end(stage: Stage) -> None:
    forwarder = mux_forwarder(stage)
    publisher = await stage.publish(forwarder)
    viewer = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(viewer.indices) > 3, within=20)
    mux = the_mux(forwarder)
    assert mux.routes()["connections"] == 2
    assert mux.routes()["addresses"] >= 2

    await forwarder.close_session(viewer.session.id)
    await forwarder.close_session(publisher.session.id)
    assert mux.routes() == {"connections": 0, "addresses": 0, "transactions": 0}
    # Sessions that never connected leave nothing behind either.
    for _ in range(5):
        _, session = await forwarder.publish(await offer_of(["audio", "video"]))
        await forwarder.close_session(session.id)
    assert mux.routes() == {"connections": 0, "addresses": 0, "transactions": 0}


async def test_datagrams_from_unknown_sources_are_dropped_and_counted(stage: Stage) -> None:
    forwarder = mux_forwarder(stage)
    publisher = await stage.publish(forwarder)
    viewer = await stage.view(forwarder, [publisher.session.id])
    await until(lambda: len(viewer.indices) > 3, within=20)
    mux = the_mux(forwarder)
    ufrag = rtc.ice_connections(publisher.session.pc)[0].local_username

    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        stranger.bind(("127.0.0.1", 0))
        source = stranger.getsockname()
        target = ("127.0.0.1", mux.port)
        stranger.sendto(b"\x80\x60" + bytes(40), target)  # an RTP packet from nowhere known
        stranger.sendto(b"", target)
        stranger.sendto(bytes(_binding("nobody:peer", b"x" * 22)), target)
        stranger.sendto(bytes(_binding(f"{ufrag}:peer", b"not-the-password-at-all")), target)
        await until(
            lambda: (
                (
                    mux.counts["dropped_unknown_source"],
                    mux.counts["dropped_unknown_ufrag"],
                    mux.counts["dropped_unauthenticated"],
                    mux.counts["dropped_malformed"],
                )
                == (1, 1, 1, 1)
            )
        )
        stranger.settimeout(0.3)
        with pytest.raises(TimeoutError):  # nothing was answered, no route was learned
            stranger.recvfrom(2048)
    finally:
        stranger.close()
    assert source not in _learned(mux, publisher.session.pc)
    # An empty datagram from the publisher's own address (it would end aiortc's DTLS
    # transport, which reads a first byte) is dropped as well.
    (client,) = rtc.ice_connections(publisher.pc)
    for protocol in rtc.stun_protocols(client):  # asyncio's transport sends no empty datagram
        own = protocol.transport.get_extra_info("socket").fileno()
        with socket.fromfd(own, socket.AF_INET, socket.SOCK_DGRAM) as same_port:
            same_port.sendto(b"", target)
    await until(lambda: mux.counts["dropped_malformed"] == 2)
    seen = len(viewer.indices)
    await until(lambda: len(viewer.indices) > seen + 5)  # the session goes on


def _binding(username: str, key: bytes) -> stun.Message:
    request = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.REQUEST,
        transaction_id=random_transaction_id(),
    )
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = 1
    request.attributes["ICE-CONTROLLING"] = 1
    request.add_message_integrity(key)
    return request


async def test_a_fragment_already_routed_is_drawn_again() -> None:
    mux = await UdpMux.open("127.0.0.1", port=free_port(), span=SPAN)
    connections = [aioice.Connection(ice_controlling=False, local_username="same") for _ in "ab"]
    try:
        plan = rtc.GatheringPlan(muxes={"127.0.0.1": mux})
        with rtc.gathering_on(["127.0.0.1"], plan):
            for connection in connections:
                await connection.gather_candidates()
        first, second = (c.local_username for c in connections)
        assert first == "same"
        assert second != "same"
        assert [(c.host, c.port) for c in connections[1].local_candidates] == [
            ("127.0.0.1", mux.port)
        ]
        assert mux.routes()["connections"] == 2
    finally:
        for connection in connections:
            await connection.close()
    assert mux.routes() == {"connections": 0, "addresses": 0, "transactions": 0}
    await mux.close()


@pytest.mark.parametrize("muxed", [False, True])
async def test_candidates_announce_the_announced_address(stage: Stage, muxed: bool) -> None:
    udp_port = free_port("127.0.0.2") if muxed else 0
    forwarder = stage.forwarder(
        host_addresses=("127.0.0.2",),
        announced_addresses=("127.0.0.3",),
        udp_port=udp_port,
        udp_port_span=SPAN,
    )
    answer, session = await forwarder.publish(await offer_of(["audio", "video"]))
    announced = candidates(answer)
    assert {host for host, _ in announced} == {"127.0.0.3"}
    if udp_port:
        assert announced[0][1] == the_mux(forwarder).port
        assert the_mux(forwarder).bound == "127.0.0.2"
    else:  # its own socket, bound where the settings say, shown as announced
        bound = {
            p.transport.get_extra_info("sockname")[0]
            for c in rtc.ice_connections(session.pc)
            for p in rtc.stun_protocols(c)
        }
        assert bound == {"127.0.0.2"}


def test_a_shard_on_another_node_binds_and_announces_that_node() -> None:
    settings = MediaSettings(use_node_address=True)
    assert settings.on_node("127.0.0.3").host_addresses == ("127.0.0.3",)
    assert settings.on_node("127.0.0.3").announced() == {}
    shown = MediaSettings(use_node_address=True, announced_addresses=("127.0.0.4",))
    assert shown.on_node("127.0.0.3").announced() == {"127.0.0.3": "127.0.0.4"}
    assert MediaSettings().on_node("127.0.0.3").host_addresses == ("127.0.0.1",)
    with pytest.raises(ValueError, match="announced_addresses"):
        MediaSettings(host_addresses=("127.0.0.1", "127.0.0.2"), announced_addresses=("::1",))


async def test_a_taken_port_range_is_refused_at_start() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        forwarder = Forwarder(
            MediaSettings(recording_enabled=False, udp_port=taken.getsockname()[1])
        )
        with pytest.raises(Unavailable) as refused:
            await forwarder.start()
        assert refused.value.reason == "media_port_unavailable"
        assert forwarder.muxes == {}
        await forwarder.close()
    finally:
        taken.close()
