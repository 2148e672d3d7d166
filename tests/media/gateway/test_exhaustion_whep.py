"""Resource exhaustion over WHEP (issue #22, finding 5), between real aiortc peers.

Talk-back listeners per candidate are capped; the sessions a staff member watches
with end on their media shard when that staff member logs out.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from actors.media.client import MediaPlane
from core import keys
from tests.media.gateway.conftest import Peers, runtime_of
from tests.media.gateway.test_whip_whep import shard_stats
from tests.support import webrtc
from tests.support.factories import joined_candidate, new_exam
from tests.support.wait import until


async def test_talkback_listeners_per_candidate_are_capped(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["2001"]})
    candidate = await joined_candidate(client, world.exam_id, "2001")
    cid = world.candidate_ids["2001"]
    url = f"/v1/whip/exams/{world.exam_id}/rooms/r1/talkback?to={cid}"
    proctor = peers.keep(await webrtc.whip_publish(client, url, world.proctors["r1"], video=False))
    assert proctor.response.status_code == 201, proctor.response.text

    cap = runtime.settings.talkback_listeners_per_candidate
    listeners = []
    for _ in range(cap):
        hearing = peers.keep(await webrtc.whep_watch(client, "/v1/whep/me/talkback", candidate))
        assert hearing.response.status_code == 201, hearing.response.text
        listeners.append(hearing)
    live = (await shard_stats(media, proctor.session_id))["live_sessions"]

    over = peers.keep(await webrtc.whep_watch(client, "/v1/whep/me/talkback", candidate))
    assert over.response.status_code == 429, over.response.text
    assert over.response.json()["reason"] == "too_many_listeners"
    assert over.response.headers["retry-after"] == "1"
    # Refused before any shard saw it: no session there, no place kept for it.
    assert (await shard_stats(media, proctor.session_id))["live_sessions"] == live
    places = keys.talkback_listeners_key(world.exam_id, cid)
    assert await runtime.redis.zcard(places) == cap

    # An ended listener gives its place back.
    ended = await client.delete(listeners[0].location, headers=candidate)
    assert ended.status_code == 200
    again = peers.keep(await webrtc.whep_watch(client, "/v1/whep/me/talkback", candidate))
    assert again.response.status_code == 201, again.response.text
    assert await runtime.redis.zcard(places) == cap


async def test_logout_ends_the_staff_members_whep_sessions(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    cid = world.candidate_ids["1001"]
    candidate = await joined_candidate(client, world.exam_id, "1001")
    publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
    assert publisher.response.status_code == 201, publisher.response.text
    proctor = world.proctors["r1"]
    url = f"/v1/whep/exams/{world.exam_id}/rooms/r1/candidates/{cid}"
    viewer = peers.keep(await webrtc.whep_watch(client, url, proctor))
    assert viewer.response.status_code == 201, viewer.response.text
    viewer_id = viewer.location.rsplit("/", 1)[1]
    assert await media.sessions.get(viewer_id) is not None
    await until(lambda: len(viewer.indices) >= 5, within=30)
    watching = (await shard_stats(media, publisher.session_id))["live_sessions"]

    assert (await client.delete("/v1/sessions/current", headers=proctor)).status_code == 204

    assert await media.sessions.get(viewer_id) is None

    async def closed_on_the_shard() -> bool:
        stats = await shard_stats(media, publisher.session_id)
        return bool(stats["live_sessions"] == watching - 1)

    await until(closed_on_the_shard, within=20, every=0.1)
    # The camera goes on: only the logged-out viewer's session ended.
    assert await media.sessions.get(publisher.session_id) is not None


async def test_a_proctors_end_ends_the_candidates_media(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["3001"]})
    cid = world.candidate_ids["3001"]
    candidate = await joined_candidate(client, world.exam_id, "3001")
    camera = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
    assert camera.response.status_code == 201, camera.response.text
    talk = f"/v1/whip/exams/{world.exam_id}/rooms/r1/talkback?to={cid}"
    proctor = peers.keep(await webrtc.whip_publish(client, talk, world.proctors["r1"], video=False))
    assert proctor.response.status_code == 201, proctor.response.text
    hearing = peers.keep(await webrtc.whep_watch(client, "/v1/whep/me/talkback", candidate))
    assert hearing.response.status_code == 201, hearing.response.text
    listener_id = hearing.location.rsplit("/", 1)[1]
    record = await media.sessions.get(camera.session_id)
    assert record is not None
    live = (await media.router.stats(record.shard))["live_sessions"]

    ended = await client.post(
        f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}/end",
        headers=world.proctors["r1"],
    )
    assert ended.status_code == 201, ended.text

    assert await media.sessions.get(camera.session_id) is None
    assert await media.sessions.get(listener_id) is None
    assert await runtime.redis.exists(keys.talkback_listeners_key(world.exam_id, cid)) == 0

    async def closed_on_the_shard() -> bool:
        stats = await media.router.stats(record.shard)
        return bool(stats["live_sessions"] <= live - 2)

    await until(closed_on_the_shard, within=20, every=0.1)
    # The proctor's talk-back goes on: only the ended candidate's sessions ended.
    assert await media.sessions.get(proctor.session_id) is not None
