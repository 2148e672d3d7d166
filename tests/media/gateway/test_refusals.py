"""Bad WHIP/WHEP input gets a clear 4xx, and nothing is allocated or stored."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from actors.media.aiortc import rtc
from actors.media.client import MediaPlane
from actors.media.shard import shard_name
from core import keys
from tests.media.gateway.conftest import Peers, runtime_of
from tests.media.test_sdp import hide, with_candidates
from tests.support import webrtc
from tests.support.factories import joined_candidate, new_exam
from tests.support.webrtc import LOOPBACK, local_offer

TRICKLE = {"content-type": "application/trickle-ice-sdpfrag"}


async def offer_of(*kinds: str) -> str:
    pc = rtc.ScopedPeerConnection(LOOPBACK)
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction="sendonly")
        return await local_offer(pc)
    finally:
        await pc.close()


def without(offer: str, prefix: str) -> str:
    return "\r\n".join(line for line in offer.splitlines() if not line.startswith(prefix))


async def media_keys(redis: Redis, exam_id: str) -> tuple[list[Any], int]:
    """Media keys naming the exam, and how many session records exist at all."""
    found = [k async for k in redis.scan_iter(match=keys.MEDIA_ALL, count=1000)]
    sessions = sum(1 for k in found if k.startswith(keys.media_session_key("").encode()))
    return [k for k in found if exam_id.encode() in k], sessions


async def test_bad_offers_are_refused_before_anything_is_allocated(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5001"]})
    candidate = await joined_candidate(client, world.exam_id, "5001")
    before = await media.router.stats(shard_name(0))
    _, records = await media_keys(runtime.redis, world.exam_id)
    good = await offer_of("audio", "video")
    url = "/v1/whip/me/camera"

    async def post(body: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await client.post(url, content=body, headers=headers or {**candidate, **webrtc.SDP})

    refusals = {
        "no_session": await post(good, {"content-type": "application/sdp"}),
        "unsupported_media_type": await post(good, {**candidate, "content-type": "text/plain"}),
        "malformed_sdp": await post("v=0\r\nthis is not SDP\r\n"),
        "too_many_tracks": await post(await offer_of("audio", "audio", "video")),
        "bundle_required": await post(without(good, "a=group:BUNDLE")),
        "rtcp_mux_required": await post(without(good, "a=rtcp-mux")),
        "wrong_direction": await post(good.replace("a=sendonly", "a=recvonly")),
    }
    statuses = {reason: (r.status_code, r.json()["reason"]) for reason, r in refusals.items()}
    assert statuses == {
        "no_session": (401, "no_session"),
        "unsupported_media_type": (415, "unsupported_media_type"),
        "malformed_sdp": (400, "malformed_sdp"),
        "too_many_tracks": (422, "too_many_tracks"),
        "bundle_required": (422, "bundle_required"),
        "rtcp_mux_required": (422, "rtcp_mux_required"),
        "wrong_direction": (422, "wrong_direction"),
    }
    assert all(r.headers["content-type"] == "application/problem+json" for r in refusals.values())
    cid = world.candidate_ids["5001"]
    watch = f"/v1/whep/exams/{world.exam_id}/rooms/r1/candidates/{cid}"
    proctor = {**world.proctors["r1"], **webrtc.SDP}
    viewer_offer = good.replace("a=sendonly", "a=recvonly")
    bad_sources = await client.post(
        f"{watch}?sources=camera,mic", content=viewer_offer, headers=proctor
    )
    assert bad_sources.json()["reason"] == "bad_sources"
    nothing = await client.post(watch, content=viewer_offer, headers=proctor)
    assert (nothing.status_code, nothing.json()["reason"]) == (404, "not_publishing")

    after = await media.router.stats(shard_name(0))
    assert after["peer_connections_created"] == before["peer_connections_created"]
    assert await runtime.redis.hget(keys.MEDIA_ROOMS, keys.room_key(world.exam_id, "r1")) is None
    assert await media_keys(runtime.redis, world.exam_id) == ([], records)


async def test_hidden_or_too_many_candidates_are_refused_before_any_shard(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["5201"]})
    candidate = await joined_candidate(client, world.exam_id, "5201")
    before = await media.router.stats(shard_name(0))
    _, records = await media_keys(runtime.redis, world.exam_id)
    good = await offer_of("audio", "video")
    limits = runtime.settings.media
    headers = {**candidate, **webrtc.SDP}

    async def post(body: str) -> tuple[int, str]:
        response = await client.post("/v1/whip/me/camera", content=body, headers=headers)
        assert response.headers["content-type"] == "application/problem+json", (
            response.status_code,
            response.text[:80],
        )
        return response.status_code, response.json()["reason"]

    # A candidate line after a bare CR: aiortc reads it, a check splitting at LF would not.
    assert await post(hide(good)) == (400, "bad_sdp")
    crowded = with_candidates(good, limits.max_offer_candidates + 1)
    assert await post(crowded) == (400, "too_many_candidates")
    after = await media.router.stats(shard_name(0))
    assert after["peer_connections_created"] == before["peer_connections_created"]
    assert await runtime.redis.hget(keys.MEDIA_ROOMS, keys.room_key(world.exam_id, "r1")) is None
    assert await media_keys(runtime.redis, world.exam_id) == ([], records)

    publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
    assert publisher.response.status_code == 201, publisher.response.text
    patch_headers = {**candidate, **TRICKLE, "if-match": publisher.response.headers["etag"]}

    async def patch(body: str) -> tuple[int, str]:
        response = await client.patch(publisher.location, content=body, headers=patch_headers)
        return response.status_code, response.json()["reason"]

    assert await patch(hide("a=mid:0\r\na=end-of-candidates\r\n")) == (400, "bad_sdp")
    crowded = with_candidates("a=mid:0\r\n", limits.max_patch_candidates + 1)
    assert await patch(crowded) == (400, "too_many_candidates")


async def test_session_urls_check_the_caller_and_the_etag(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["5101", "5102"]})
    owner = await joined_candidate(client, world.exam_id, "5101")
    other = await joined_candidate(client, world.exam_id, "5102")
    publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", owner))
    assert publisher.response.status_code == 201, publisher.response.text
    etag = publisher.response.headers["etag"]
    location = publisher.location
    ufrag = next(
        line.split(":", 1)[1]
        for line in publisher.pc.localDescription.sdp.splitlines()
        if line.startswith("a=ice-ufrag:")
    )
    fragment = (
        f"a=ice-ufrag:{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
    )

    async def patch(headers: dict[str, str], body: str = fragment) -> tuple[int, str]:
        response = await client.patch(location, content=body, headers=headers)
        return response.status_code, response.json().get("reason", "") if response.content else ""

    assert await patch({**other, **TRICKLE, "if-match": etag}) == (404, "unknown_session")
    assert await patch({**world.proctors["r1"], **TRICKLE, "if-match": etag}) == (
        404,
        "unknown_session",
    )
    assert await patch({**owner, **TRICKLE}) == (428, "if_match_required")
    assert await patch({**owner, **TRICKLE, "if-match": '"stale"'}) == (412, "stale_etag")
    assert await patch({**owner, "content-type": "text/plain", "if-match": etag}) == (
        415,
        "unsupported_media_type",
    )
    # An ICE restart needs a new password as well as a new ufrag (tests/media/gateway/
    # test_ice_restart.py restarts for real).
    restart = fragment.replace(f"a=ice-ufrag:{ufrag}", "a=ice-ufrag:newufrag")
    assert await patch({**owner, **TRICKLE, "if-match": etag}, restart) == (
        400,
        "bad_ice_credentials",
    )
    assert await patch({**owner, **TRICKLE, "if-match": etag}) == (204, "")
    assert (await client.delete(location, headers=other)).status_code == 404
    whep_url = location.replace("/v1/whip/", "/v1/whep/")
    assert (await client.delete(whep_url, headers=owner)).status_code == 404

    preflight = await client.options("/v1/whip/me/camera")
    assert preflight.status_code == 204
    assert preflight.headers["accept-post"] == "application/sdp"
    assert "If-Match" in preflight.headers["access-control-allow-headers"]
    assert {"Location", "ETag", "Link"} <= {
        h.strip() for h in preflight.headers["access-control-expose-headers"].split(",")
    }
    session_preflight = await client.options(location)
    assert session_preflight.headers["accept-patch"] == "application/trickle-ice-sdpfrag"

    assert (await client.delete(location, headers=owner)).status_code == 200
    assert (await client.delete(location, headers=owner)).status_code == 404
