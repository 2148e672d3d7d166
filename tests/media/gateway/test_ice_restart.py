"""ICE restart by WHIP PATCH (RFC 9725 section 4.3.2), through the gateway and a MediaShard.

A candidate's network changes (Wi-Fi to cellular: here 127.0.0.1 to 127.0.0.5):
the publisher PATCHes new ICE credentials and candidates, gets the shard's new
ones and a new ETag, and moves. Its session id stays, the proctor watching it
never re-subscribes, and its recording runs on without a gap.
"""

from __future__ import annotations

import itertools
import re

import aiohttp
import httpx
from fastapi import FastAPI

from actors.media import trickle
from actors.media.aiortc import rtc
from actors.media.client import MediaPlane
from infra.settings import Settings
from loadtests import webrtc as loadtest_webrtc
from tests.media.gateway.conftest import Peers, runtime_of
from tests.media.gateway.test_recordings import fetch, open_segment
from tests.support import webrtc
from tests.support.factories import joined_candidate, new_exam
from tests.support.wait import until
from tests.support.webrtc import FPS

NEW_HOST = "127.0.0.5"
TRICKLE = {"content-type": trickle.TRICKLE_TYPE}


async def test_a_publisher_changes_networks_and_its_session_viewer_and_recording_go_on(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["7301"]})
    cid = world.candidate_ids["7301"]
    candidate = await joined_candidate(client, world.exam_id, "7301")
    publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
    assert publisher.response.status_code == 201, publisher.response.text
    first_etag = publisher.etag
    url = f"/v1/whep/exams/{world.exam_id}/rooms/r1/candidates/{cid}"
    viewer = peers.keep(await webrtc.whep_watch(client, url, world.proctors["r1"]))
    assert viewer.response.status_code == 201, viewer.response.text
    await until(lambda: len(viewer.indices) >= 30, within=30)

    # Refused restarts: a stale ETag (412), credentials that are not ICE's (400). The
    # client undoes its half of a refused restart and stays where it was.
    stale = await publisher.restart_ice(client, candidate, [NEW_HOST], etag='"stale"')
    assert (stale.status_code, stale.json()["reason"]) == (412, "stale_etag")
    bad = trickle.ice_fragment("no!", "x" * 22, "0", ["1 1 udp 2130706431 127.0.0.5 9 typ host"])
    headers = {**candidate, **TRICKLE, "if-match": first_etag}
    refused = await client.patch(publisher.location, content=bad, headers=headers)
    assert (refused.status_code, refused.json()["reason"]) == (400, "bad_ice_credentials")

    response = await publisher.restart_ice(client, candidate, [NEW_HOST])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == trickle.TRICKLE_TYPE
    answer = trickle.parse_fragment(response.text)
    assert answer.restart_credentials()  # the shard's new ufrag and pwd
    assert answer.candidates
    assert answer.end_of_candidates
    assert publisher.etag not in ("", first_etag)
    record = await media.sessions.get(publisher.session_id)
    assert record is not None
    assert record.etag == publisher.etag  # the same session, retagged
    # The publisher's old socket is closed: what the proctor sees now came the new way.
    (ice,) = rtc.ice_connections(publisher.pc)
    assert {p.local_candidate.host for p in rtc.stun_protocols(ice)} == {NEW_HOST}
    moved_at = len(viewer.indices)
    await until(lambda: len(viewer.indices) >= moved_at + 45, within=30)
    # In order, and no more than a second of frames missing anywhere (by the frames'
    # own indices: how late a frame arrives depends on the machine's load too).
    indices = [index for index, _ in viewer.indices]
    assert all(0 < b - a <= FPS for a, b in itertools.pairwise(indices)), indices
    assert "video" not in viewer.ended
    stats = await media.router.stats(record.shard)
    assert stats["ice_restarts"] >= 1

    # The old ETag is stale now; trickling goes on with the new one.
    trickle_headers = {**candidate, **TRICKLE}
    end = "a=mid:0\r\na=end-of-candidates\r\n"
    old = await client.patch(
        publisher.location, content=end, headers={**trickle_headers, "if-match": first_etag}
    )
    assert old.status_code == 412
    new = await client.patch(
        publisher.location, content=end, headers={**trickle_headers, "if-match": publisher.etag}
    )
    assert new.status_code == 204, new.text

    # The recording: one session, its frames in order, no gap beyond a second.
    assert (await client.delete(publisher.location, headers=candidate)).status_code == 200
    base = f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}/recordings"
    segments = (await client.get(base, headers=world.proctors["r1"])).json()["segments"]
    assert segments
    assert all(s["session"] == publisher.session_id for s in segments)
    recorded: list[int] = []
    for segment in segments:
        key = f"{world.exam_id}/recordings/{cid}/{segment['name']}"
        recorded += open_segment(await fetch(runtime_of(app).settings, world.region, key))[0]
    assert recorded
    assert all(0 < b - a <= FPS for a, b in itertools.pairwise(recorded)), recorded
    assert recorded[-1] >= max(indices) - FPS  # recorded through the move, to the end
    assert re.fullmatch(r"[0-9a-f]{32}", publisher.session_id)


def test_ice_servers_are_read_from_link_headers_as_the_browser_reads_them() -> None:
    header = (
        '<stun:127.0.0.1:3478>; rel="ice-server", <https://x>; rel="help", '
        '<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="1700:ab,c";'
        ' credential="s3cr,t="; credential-type="password"'
    )
    stun, turn = loadtest_webrtc.ice_servers_from(header)
    assert (stun.urls, stun.username) == ("stun:127.0.0.1:3478", None)
    assert (turn.urls, turn.username, turn.credential) == (
        "turn:127.0.0.1:3478?transport=udp",
        "1700:ab,c",
        "s3cr,t=",
    )
    assert loadtest_webrtc.ice_servers_from(None) == []


async def test_the_load_testers_publisher_gathers_linked_relays_and_restarts_ice(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["7302"]})
    candidate = dict(await joined_candidate(client, world.exam_id, "7302"))
    url = "/v1/whip/me/camera"
    clips = loadtest_webrtc.encode_clips({})
    async with aiohttp.ClientSession(settings.gateway_url) as http:
        # OPTIONS first: the TURN server it links is in the offer as a relay candidate.
        servers = await loadtest_webrtc.linked_ice_servers(http, url, candidate)
        assert any(str(s.urls).startswith("turn:") and s.credential for s in servers)
        session = await loadtest_webrtc.whip_publish(
            http, url, candidate, ["127.0.0.1"], clips, showing=None
        )
        try:
            assert " typ relay" in session.pc.localDescription.sdp
            await until(lambda: session.pc.connectionState == "connected", within=20)
            first = session.etag
            await session.restart_ice(http, candidate, [NEW_HOST])
            assert session.etag not in ("", first)
            record = await media.sessions.get(session.location.rsplit("/", 1)[1])
            assert record is not None
            before = (await media.router.stats(record.shard))["frames_received"]

            async def flowing() -> bool:
                stats = await media.router.stats(record.shard)
                return bool(stats["frames_received"] - before >= 30)

            await until(flowing, within=20, every=0.2)
            assert session.pc.connectionState == "connected"
        finally:
            await session.close(http, candidate)
