"""WHIP in, WHEP out, through the real gateway and a MediaShard actor, between aiortc peers."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import statistics
from typing import Any

import httpx
import ray
from fastapi import FastAPI

from actors.media.client import MediaPlane
from actors.media.face_feed import MONITOR_NAME
from actors.media.pairing import DEVICE_HEADER
from actors.media.shard import shard_name
from core import keys
from infra.settings import Settings
from infra.telemetry import actor_call
from tests.media.gateway.conftest import Peers, runtime_of
from tests.support import webrtc
from tests.support.factories import auth, joined_candidate, new_exam
from tests.support.wait import until


def assert_in_order(indices: list[int]) -> None:
    assert indices, "no video frame decoded"
    assert all(b > a for a, b in itertools.pairwise(indices)), indices
    span = indices[-1] - indices[0] + 1
    assert len(indices) >= 0.9 * span, (len(indices), span)


async def shard_stats(media: MediaPlane, session_id: str) -> dict[str, Any]:
    record = await media.sessions.get(session_id)
    assert record is not None
    stats: dict[str, Any] = await media.router.stats(record.shard)
    return stats


async def test_camera_reaches_the_proctor_in_order_without_transcoding(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["1001"]})
    cid = world.candidate_ids["1001"]
    candidate = await joined_candidate(client, world.exam_id, "1001")
    monitor = await asyncio.to_thread(ray.get_actor, MONITOR_NAME, namespace=settings.ray_namespace)
    monitored = (await actor_call(monitor.stats)).get("not_enrolled", 0)
    before = await media.router.stats(shard_name(0))
    publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
    response = publisher.response
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/sdp"
    assert response.headers["location"].startswith("/v1/whip/sessions/")
    assert len(publisher.session_id) == 32
    assert response.headers["etag"].startswith('"')
    assert "Location" in response.headers["access-control-expose-headers"]
    # The test stack's embedded TURN server, with a credential (tests/web/test_networks.py
    # shows a browser using it).
    assert 'rel="ice-server"; username="' in response.headers["link"]
    assert (await shard_stats(media, publisher.session_id))["name"] == shard_name(0)

    url = f"/v1/whep/exams/{world.exam_id}/rooms/r1/candidates/{cid}"
    viewer = peers.keep(await webrtc.whep_watch(client, url, world.proctors["r1"]))
    assert viewer.response.status_code == 201, viewer.response.text
    assert viewer.location.startswith("/v1/whep/sessions/")
    await until(lambda: len(viewer.indices) >= 45 and viewer.audio_frames >= 50, within=30)

    assert_in_order([index for index, _ in viewer.indices])
    assert publisher.video is not None
    latencies = [arrived - publisher.video.sent_at[i] for i, arrived in viewer.indices]
    median = statistics.median(latencies)
    print(f"\nWHIP->shard->WHEP latency: median {median * 1000:.0f} ms over {len(latencies)}")
    assert median < 1.0
    assert viewer.audio_peak > 1000  # the tone, not silence

    # Camera samples go to the face monitor as JPEG; this candidate is not enrolled, so
    # the monitor only counts them.
    async def delivered() -> bool:
        stats = await shard_stats(media, publisher.session_id)
        return bool(stats.get("face_delivered", 0) > before.get("face_delivered", 0))

    await until(delivered, within=20, every=0.1)
    assert (await actor_call(monitor.stats))["not_enrolled"] > monitored

    after = await shard_stats(media, publisher.session_id)
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after if key != "name"}
    assert delta["frames_forwarded"] >= 45 + 50
    assert after["encodes"] == 0  # the forwarding path never encodes...
    assert after["decodes"] == after["samples"]  # ...and decodes only face samples, rarely
    assert 1 <= delta["decodes"] <= 2
    # Every camera sample was sent to the monitor, or dropped and counted.
    face = {k[5:]: v for k, v in after.items() if k.startswith("face_")}
    sent_or_dropped = sum(face.get(k, 0) for k in ("sent", "dropped_absent", "dropped_busy"))
    assert face["samples"] == sent_or_dropped

    assert (await client.delete(viewer.location, headers=world.proctors["r1"])).status_code == 200
    assert (await client.delete(publisher.location, headers=candidate)).status_code == 200
    assert await media.sessions.get(publisher.session_id) is None


async def test_talkback_reaches_the_addressed_candidate_only(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["2001", "2002"]})
    addressed = await joined_candidate(client, world.exam_id, "2001")
    other = await joined_candidate(client, world.exam_id, "2002")
    cid = world.candidate_ids["2001"]
    url = f"/v1/whip/exams/{world.exam_id}/rooms/r1/talkback?to={cid}"
    proctor = peers.keep(await webrtc.whip_publish(client, url, world.proctors["r1"], video=False))
    assert proctor.response.status_code == 201, proctor.response.text

    # A WHEP client offering audio and video: video is answered inactive.
    hearing = peers.keep(await webrtc.whep_watch(client, "/v1/whep/me/talkback", addressed))
    assert hearing.response.status_code == 201, hearing.response.text
    await until(lambda: hearing.audio_frames >= 50, within=20)
    assert hearing.audio_peak > 1000

    refused = await webrtc.whep_watch(client, "/v1/whep/me/talkback", other)
    await refused.close()
    assert refused.response.status_code == 404
    assert refused.response.json()["reason"] == "not_publishing"
    stats = await shard_stats(media, proctor.session_id)
    assert stats["encodes"] == 0


async def test_side_device_publishes_with_a_pairing_token(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["3001"]})
    cid = world.candidate_ids["3001"]
    candidate = await joined_candidate(client, world.exam_id, "3001")
    pairing = await client.post("/v1/me/pairing", headers=candidate)
    assert pairing.status_code == 201, pairing.text
    token = pairing.json()["token"]
    side = httpx.Headers({**auth(token), DEVICE_HEADER: secrets.token_urlsafe(16)})
    found = [k async for k in runtime.redis.scan_iter(match=keys.MEDIA_PAIRINGS)]
    values = [await runtime.redis.get(k) for k in found]
    assert not any(token.encode() in (k + (v or b"")) for k, v in zip(found, values, strict=True))

    wrong = await webrtc.whip_publish(client, "/v1/whip/me/side", candidate, audio=False)
    await wrong.close()
    assert wrong.response.json()["reason"] == "wrong_device"
    phone = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/side", side, audio=False))
    assert phone.response.status_code == 201, phone.response.text

    url = f"/v1/whep/exams/{world.exam_id}/rooms/r1/candidates/{cid}?sources=side"
    viewer = peers.keep(
        await webrtc.whep_watch(client, url, world.proctors["r1"], kinds=("video",))
    )
    assert viewer.response.status_code == 201, viewer.response.text
    await until(lambda: len(viewer.indices) >= 15, within=20)
    assert_in_order([index for index, _ in viewer.indices])

    # A new token revokes the old one: the old device can no longer touch its session.
    assert (await client.post("/v1/me/pairing", headers=candidate)).status_code == 201
    revoked = await client.delete(phone.location, headers=side)
    assert revoked.status_code == 401
    assert revoked.json()["reason"] == "invalid_pairing"


async def test_a_pairing_token_is_bound_to_the_first_device_that_publishes_with_it(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["3101"]})
    candidate = await joined_candidate(client, world.exam_id, "3101")
    token = (await client.post("/v1/me/pairing", headers=candidate)).json()["token"]
    phone = httpx.Headers({**auth(token), DEVICE_HEADER: secrets.token_urlsafe(16)})
    thief = httpx.Headers({**auth(token), DEVICE_HEADER: secrets.token_urlsafe(16)})

    unnamed = await webrtc.whip_publish(client, "/v1/whip/me/side", auth(token), audio=False)
    await unnamed.close()
    assert unnamed.response.status_code == 400, unnamed.response.text
    assert unnamed.response.json()["reason"] == "device_id_required"
    first = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/side", phone, audio=False))
    assert first.response.status_code == 201, first.response.text

    # Another device with the same token, with its own id or none: refused, nothing touched.
    for headers in (thief, auth(token)):
        second = await webrtc.whip_publish(client, "/v1/whip/me/side", headers, audio=False)
        await second.close()
        assert second.response.status_code == 403, second.response.text
        assert second.response.json()["reason"] == "pairing_bound"
        ended = await client.delete(first.location, headers=headers)
        assert (ended.status_code, ended.json()["reason"]) == (403, "pairing_bound")

    # The phone itself reconnects (a new offer after a failure) and ends its session.
    again = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/side", phone, audio=False))
    assert again.response.status_code == 201, again.response.text
    assert (await client.delete(again.location, headers=phone)).status_code == 200
