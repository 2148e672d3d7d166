"""RTCP reports of a shard's sessions go out together, on quarter-second ticks."""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

from aiortc.rtp import RtcpRrPacket, RtcpSrPacket

from actors.media.aiortc import rtc
from actors.media.aiortc.rtcp_ticks import BASE_INTERVAL_S, TICK_S, TickedRandom
from tests.media.conftest import Stage
from tests.support.wait import until


def on_tick(when: float, slack: float = 0.0) -> bool:
    off = when / TICK_S - math.floor(when / TICK_S)
    return min(off, 1 - off) * TICK_S <= slack


async def test_a_ticked_draw_ends_the_interval_on_a_tick_within_its_range() -> None:
    loop = asyncio.get_running_loop()
    draws = []
    for _ in range(200):
        before = loop.time()
        draw = TickedRandom().random()
        assert on_tick(before + BASE_INTERVAL_S + draw, slack=loop.time() - before + 1e-6)
        draws.append(draw)
    assert min(draws) >= 0
    assert max(draws) < 1 + TICK_S
    assert len({round(d / TICK_S) for d in draws}) >= 4  # still spread, not one fixed wait


async def test_the_shards_sender_and_receiver_reports_go_out_on_shared_ticks(
    stage: Stage,
) -> None:
    forwarder = stage.forwarder()
    publisher = await stage.publish(forwarder, audio=False)
    viewers = [await stage.view(forwarder, [publisher.session.id]) for _ in range(3)]
    loop = asyncio.get_running_loop()
    sent: dict[int, list[float]] = {}

    def record(report_loop: Any) -> None:
        times = sent.setdefault(id(report_loop), [])

        def on_packet(packet: Any) -> None:
            # The report loops' packets only (not NACK, PLI or REMB, sent when needed).
            if isinstance(packet, RtcpSrPacket | RtcpRrPacket):
                times.append(loop.time())

        rtc.tap_rtcp(report_loop, on_packet)

    # The shard's side: each viewer's video sender (SR) and the publisher's receiver (RR).
    for viewer in viewers:
        view_pc = forwarder.session(viewer.session.id).pc
        record(next(t.sender for t in view_pc.getTransceivers() if t.kind == "video"))
    record(publisher.session.pc.getTransceivers()[0].receiver)
    await until(lambda: all(len(times) >= 4 for times in sent.values()), within=15)

    everything = [when for times in sent.values() for when in times]
    # Sent in the loop iteration the tick's timers ran in (a report can wait a few ms
    # behind forwarding work in that iteration).
    assert all(on_tick(when, slack=0.05) for when in everything), sorted(
        w % TICK_S for w in everything
    )
    for times in sent.values():  # each still reports every 0.5-1.75 s
        assert all(0.45 <= b - a <= 1.8 for a, b in itertools.pairwise(times))
    assert len(sent) == 4
    assert await rtc.missing_private_api() == []
