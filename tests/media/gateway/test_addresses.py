"""A media shard on a Ray node announces that node's address, on its one UDP port, and
is reached there through the gateway (issue #23: addresses and one port per shard)."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from actors.media.client import MediaPlane
from core import keys
from infra.processes import free_port_block
from infra.settings import Settings
from tests.media.gateway.conftest import Peers, dedicated_shard, runtime_of
from tests.support import webrtc
from tests.support.factories import joined_candidate, new_exam
from tests.support.wait import until

HOST_CANDIDATE = re.compile(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host")


async def test_a_shard_announces_its_nodes_address_on_its_one_port(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["1001"]})
    cid = world.candidate_ids["1001"]
    candidate = await joined_candidate(client, world.exam_id, "1001")
    port = free_port_block(4, 24500, 25500)
    room = keys.room_key(world.exam_id, "r1")
    async with dedicated_shard(
        media, settings, room, use_node_address=True, udp_port=port, udp_port_span=4
    ):
        publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
        assert publisher.response.status_code == 201, publisher.response.text
        url = f"/v1/whep/exams/{world.exam_id}/rooms/r1/candidates/{cid}"
        viewer = peers.keep(await webrtc.whep_watch(client, url, world.proctors["r1"]))
        assert viewer.response.status_code == 201, viewer.response.text
        for answer in (publisher.response.text, viewer.response.text):
            found = HOST_CANDIDATE.findall(answer)
            # The test stack's only Ray node is 127.0.0.2: not the 127.0.0.1 the media
            # settings name, so the address can only have come from the node.
            assert found, answer
            assert {address for address, _ in found} == {settings.ray_head_ip}
            assert {int(p) for _, p in found} == {int(found[0][1])}
            assert port <= int(found[0][1]) < port + 4
        await until(lambda: len(viewer.indices) >= 10, within=30)
