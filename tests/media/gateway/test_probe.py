"""The pre-join probe (`POST /v1/whip/me/probe`) and a media drain's `reconnect` reaching
candidates: a probe is answered before the exam starts, ends by itself, is never recorded,
sampled or watched, and is budgeted; refused ones store nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import pytest
from fastapi import FastAPI

from actors.media.aiortc import rtc
from actors.media.client import MediaPlane
from actors.rooms.journal import event_order
from api.routes.presence import PATH
from core import keys
from infra.errors import NotFound
from infra.redis import over_limit
from infra.settings import Settings
from tests.media.gateway.conftest import Peers, dedicated_shard, runtime_of
from tests.media.gateway.test_recordings import list_keys
from tests.media.gateway.test_refusals import media_keys, offer_of
from tests.support import webrtc
from tests.support.factories import candidate_login, joined_candidate, new_exam
from tests.support.wait import until

PROBE = "/v1/whip/me/probe"
PROBE_SECONDS = 3.0


async def test_a_probe_is_answered_before_the_start_then_ends_unrecorded_and_unwatched(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    runtime = runtime_of(app)
    starts = datetime.now(UTC) + timedelta(minutes=10)  # logins are open, the exam is not
    world = await new_exam(
        client, runtime, {"r1": ["6101"]},
        starts_at=starts.isoformat(), ends_at=(starts + timedelta(hours=1)).isoformat(),
    )  # fmt: skip
    exam, cid = world.exam_id, world.candidate_ids["6101"]
    candidate = await candidate_login(client, exam, "6101")
    offer = await offer_of("audio", "video")

    # Refused (no consent yet, staff, a bad offer): a problem, and nothing stored.
    refused = {
        "consent": await webrtc.post_offer(client, PROBE, candidate, offer),
        "staff": await webrtc.post_offer(client, PROBE, world.proctors["r1"], offer),
    }
    consent = {"policy_version": "1"}
    assert (await client.post("/v1/me/consent", json=consent, headers=candidate)).is_success
    refused["offer"] = await webrtc.post_offer(client, PROBE, candidate, "v=0\r\nnot SDP\r\n")
    assert {k: (r.status_code, r.json()["reason"]) for k, r in refused.items()} == {
        "consent": (403, "consent_required"),
        "staff": (403, "candidates_only"),
        "offer": (400, "malformed_sdp"),
    }
    assert all(r.headers["content-type"] == "application/problem+json" for r in refused.values())
    assert (await media_keys(runtime.redis, exam))[0] == []

    linked = await client.options(PROBE, headers=candidate)
    assert linked.status_code == 204
    assert "POST" in linked.headers["allow"]

    room = keys.room_key(exam, "r1")
    # Settings that would record and sample every source: a probe is still neither.
    every = ("camera", "screen", "side", "probe")
    own = {"probe_seconds": PROBE_SECONDS, "recorded_sources": every, "sampled_sources": every}
    async with dedicated_shard(media, settings, room, **own) as shard:
        first = peers.keep(await webrtc.whip_publish(client, PROBE, candidate))
        assert first.response.status_code == 201, first.response.text
        assert first.response.headers["location"].startswith("/v1/whip/sessions/")
        await until(lambda: first.pc.connectionState == "connected", within=10)
        # The camera waits for the start; the probe did not.
        camera = await webrtc.post_offer(client, "/v1/whip/me/camera", candidate, offer)
        assert (camera.status_code, camera.json()["reason"]) == (403, "not_started")

        # Nobody watches a probe: not through the gateway, not on the shard by its id.
        watch = f"/v1/whep/exams/{exam}/rooms/r1/candidates/{cid}"
        viewer_offer = await offer_of_receiver()
        named = await webrtc.post_offer(
            client, f"{watch}?sources=probe", world.proctors["r1"], viewer_offer
        )
        assert (named.status_code, named.json()["reason"]) == (422, "bad_sources")
        camera_view = await webrtc.post_offer(client, watch, world.proctors["r1"], viewer_offer)
        assert (camera_view.status_code, camera_view.json()["reason"]) == (404, "not_publishing")
        with pytest.raises(NotFound) as refusal:
            await media.router.subscribe(
                shard, viewer_offer, [first.session_id], content_type="application/sdp",
                session_id="probe-viewer",
            )  # fmt: skip
        assert refusal.value.reason == "unknown_session"

        # A second probe replaces the first: one at a time.
        second = peers.keep(await webrtc.whip_publish(client, PROBE, candidate))
        assert second.response.status_code == 201, second.response.text

        async def on_shard(session_id: str) -> bool:
            found: bool = await media.router.shards.call(shard, "has_session", session_id)
            return found

        async def first_gone() -> bool:
            return not await on_shard(first.session_id)

        await until(first_gone, within=5)
        assert await on_shard(second.session_id)
        await until(lambda: second.pc.connectionState == "connected", within=10)

        # It ends by itself after `probe_seconds`, whatever the client does.
        async def second_gone() -> bool:
            return not await on_shard(second.session_id)

        await until(second_gone, within=PROBE_SECONDS + 5)
        stats = await media.router.stats(shard)
        assert stats["probes_ended"] == 1
        assert stats["frames_received"] > 0  # media came in...
        # ...and none of it was recorded or sampled for the face checks.
        unseen = ("segments_recorded", "segments_stored", "samples", "face_samples")
        assert {name: stats.get(name, 0) for name in unseen} == dict.fromkeys(unseen, 0)
    assert await list_keys(settings, world.region, f"{exam}/") == []
    assert await runtime.redis.exists(*keys.recording_keys(exam, cid)) == 0

    # The budget: each probe spent one; the rest spent here, the next is refused.
    budget = keys.media_probe_budget_key(exam, cid)
    media_settings = settings.media
    for _ in range(media_settings.probe_budget - 2):
        await over_limit(runtime.redis, budget, media_settings.probe_window_s, 10**6)
    _, records = await media_keys(runtime.redis, exam)
    limited = await webrtc.post_offer(client, PROBE, candidate, offer)
    assert (limited.status_code, limited.json()["reason"]) == (429, "probe_limit")
    assert int(limited.headers["retry-after"]) > 0
    assert (await media_keys(runtime.redis, exam))[1] == records


async def offer_of_receiver() -> str:
    pc = rtc.ScopedPeerConnection(webrtc.LOOPBACK)
    try:
        for kind in ("audio", "video"):
            pc.addTransceiver(kind, direction="recvonly")
        return await webrtc.local_offer(pc)
    finally:
        await pc.close()


async def test_a_reconnect_reaches_the_candidates_it_is_meant_for(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["6201", "6202"]})
    exam = world.exam_id
    one, other = world.candidate_ids["6201"], world.candidate_ids["6202"]
    headers = dict(await joined_candidate(client, exam, "6201"))
    await joined_candidate(client, exam, "6202")
    room = keys.room_key(exam, "r1")
    gap = settings.presence_min_interval_seconds

    async def beat(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        await asyncio.sleep(gap)
        await ws.send_str(json.dumps({}))
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
        return answer

    async def stream_reads() -> int:  # XRANGE: the journal's own scripts use XREVRANGE
        stats = await runtime.redis.info("commandstats")
        return int(stats.get("cmdstat_xrange", {}).get("calls", 0))

    reads_before = await stream_reads()
    async with (
        aiohttp.ClientSession(settings.gateway_url) as http,
        http.ws_connect(PATH, headers=headers) as ws,
    ):
        assert "reconnect" not in await beat(ws)
        # Meant for another candidate: not told.
        await runtime.rooms.append(room, {"type": "reconnect", "cid": other, "plane": "media"})
        assert "reconnect" not in await beat(ws)
        drill = {"type": "reconnect", "plane": "media", "reason": "drill", "retry_after": 1}
        await runtime.rooms.append(room, drill)
        told = (await beat(ws))["reconnect"]
        assert {k: told[k] for k in ("plane", "reason", "retry_after")} == {
            "plane": "media", "reason": "drill", "retry_after": 1,
        }  # fmt: skip
        assert "reconnect" not in await beat(ws)  # told once
    # The shard's answer carries it: the beats read no stream (each used to read the
    # room's evidence since the previous one).
    assert await stream_reads() - reads_before < 2

    # The page's own channel, `GET /v1/me/room`, shows the latest one meant for them.
    view = (await client.get("/v1/me/room", headers=headers)).json()
    assert view["reconnect"] == told
    await runtime.rooms.append(room, {"type": "reconnect", "cid": one, "reason": "mine"})
    mine = (await client.get("/v1/me/room", headers=headers)).json()["reconnect"]
    assert mine["reason"] == "mine"
    assert event_order(mine["id"]) > event_order(told["id"])
