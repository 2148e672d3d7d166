"""A candidate whose network lets nothing through but TURN still takes the exam.

Chromium runs inside a home network namespace behind a masquerading router that
forwards only to the platform's web front and its TURN port (tests/support/netns.py):
the media shard's own candidates (127.0.0.1) are out of the home's reach, so the
only way for the camera to get in is the relay named in the WHIP `Link` headers with
credentials minted for this session. Once with UDP let through (TURN over UDP), once
with all UDP blocked (TURN over TCP, as on a school network). The proctor, on the
platform side, watches the candidate's tile and sees the picture move.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, expect

from infra import services
from infra.processes import free_port, free_port_block
from infra.settings import Settings
from tests.support.factories import new_exam
from tests.support.netns import PLATFORM, home_network
from tests.support.serve import served_gateway
from tests.web.conftest import chromium
from tests.web.pages import SECONDS, open_candidate, open_console, pass_checks, runtime_of
from tests.web.test_browser import frame_of

# The candidate types and the relay protocol of each connected peer of a page.
SELECTED_LOCAL = """
async () => {
  const found = [];
  for (const pc of window.testPeers.filter((p) => p.connectionState === 'connected')) {
    const stats = [...(await pc.getStats()).values()];
    const byId = new Map(stats.map((s) => [s.id, s]));
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const local = byId.get(byId.get(transport.selectedCandidatePairId).localCandidateId);
    found.push([local.candidateType, local.relayProtocol || null]);
  }
  return found;
}
"""


def _front_settings(settings: Settings, state: Path) -> Settings:
    """The platform as the home sees it: a gateway and a TURN server on 198.18.0.1,
    sharing the test stack's Redis and Ray (one platform, a second front door)."""
    gateway_port, turn_port = free_port(), free_port()
    relay = free_port_block(16, 23900, 24500)
    turn = settings.turn.model_copy(
        update={
            "listen_address": PLATFORM,
            "port": turn_port,
            "relay_address": "127.0.0.1",
            "relay_min_port": relay,
            "relay_max_port": relay + 15,
            "allowed_peer_networks": ("127.0.0.0/8",),
            "urls": (
                f"turn:{PLATFORM}:{turn_port}?transport=udp",
                f"turn:{PLATFORM}:{turn_port}?transport=tcp",
            ),
        }
    )
    return settings.model_copy(
        update={
            "state_dir": state,
            "gateway_host": PLATFORM,
            "gateway_port": gateway_port,
            "public_origins": (f"http://{PLATFORM}:{gateway_port}",),
            # Plain HTTP on a test address: a Secure cookie would never be sent back.
            "cookie_secure": False,
            "turn": turn,
        }
    )


@pytest.mark.parametrize("network", ["nat", "udp_blocked"])
async def test_a_candidate_reachable_only_through_turn_is_watched_by_the_proctor(
    network: str,
    browser: Browser,
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    tmp_path: Path,
) -> None:
    front = _front_settings(settings, tmp_path)
    turn_port = front.turn.port
    udp = [turn_port] if network == "nat" else []
    with home_network(tcp_ports=[front.gateway_port, turn_port], udp_ports=udp) as home:
        relay = services.turn_process(front)
        relay.start()
        try:
            relay.wait_healthy(lambda: services.turn_healthy(front), 20)
            async with served_gateway(front):
                world = await new_exam(client, runtime_of(app), {"r1": ["1001"]})
                cid = world.candidate_ids["1001"]
                username = (await client.get("/v1/staff/me", headers=world.proctors["r1"])).json()[
                    "username"
                ]
                origin = f"http://{PLATFORM}:{front.gateway_port}"
                async with chromium(
                    f"--unsafely-treat-insecure-origin-as-secure={origin}",
                    executable=str(home.wrapper(tmp_path, "/usr/bin/chromium")),
                ) as home_browser:
                    candidate = await open_candidate(home_browser, front, world.exam_id, "1001")
                    console = await open_console(browser, settings, username, f"{world.exam_id}/r1")
                    try:
                        await pass_checks(candidate)
                        selected = await candidate.evaluate(SELECTED_LOCAL)
                        protocol = "udp" if network == "nat" else "tcp"
                        assert selected == [["relay", protocol]], selected
                        tile = console.locator(f'.tile[data-cid="{cid}"]')
                        video = tile.locator("video.camera")
                        await expect(video).to_have_js_property(
                            "readyState", 4, timeout=20 * SECONDS
                        )
                        first = await frame_of(console, cid)
                        await console.wait_for_timeout(700)
                        assert await frame_of(console, cid) != first, "the tile does not move"
                    finally:
                        await console.context.close()
                        await candidate.context.close()
        finally:
            relay.stop()
    log = (front.state_dir / "logs" / "turn.log").read_text()
    # coturn logs the usernames it served: the pseudonymous subject, never a candidate id.
    assert cid not in log
