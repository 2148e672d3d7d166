"""Recordings: segments in the exam's regional bucket only, indexed, listed and played back."""

from __future__ import annotations

import asyncio
import io
import json

import av
import httpx
from fastapi import FastAPI

from actors.media.client import MediaPlane
from infra.objectstore import ObjectStores
from infra.settings import Settings
from tests.media.gateway.conftest import Peers, runtime_of
from tests.support import webrtc
from tests.support.factories import joined_candidate, new_exam
from tests.support.wait import until
from tests.support.webrtc import FPS, read_index


def open_segment(data: bytes) -> tuple[list[int], int, float]:
    """Decoded frame indices, audio packets and duration (seconds) of one segment."""
    with av.open(io.BytesIO(data), "r") as container:
        duration = (container.duration or 0) / 1_000_000
        indices = [read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    with av.open(io.BytesIO(data), "r") as container:
        audio = sum(1 for p in container.demux(audio=0) if p.size)
    return indices, audio, duration


async def list_keys(settings: Settings, region: str, prefix: str) -> list[str]:
    stores = ObjectStores(settings)
    listed = await asyncio.to_thread(
        stores.client(region).list_objects_v2, Bucket=stores.bucket(region), Prefix=prefix
    )
    return [item["Key"] for item in listed.get("Contents", []) if "Key" in item]


async def fetch(settings: Settings, region: str, key: str) -> bytes:
    stores = ObjectStores(settings)
    response = await asyncio.to_thread(
        stores.client(region).get_object, Bucket=stores.bucket(region), Key=key
    )
    body: bytes = response["Body"].read()
    return body


async def test_segments_land_in_the_exams_region_only_and_play_back(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    world = await new_exam(
        client, runtime_of(app), {"r1": ["4001"], "r2": ["4002"]}, region="cn-east"
    )
    cid = world.candidate_ids["4001"]
    candidate = await joined_candidate(client, world.exam_id, "4001")
    publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
    assert publisher.response.status_code == 201, publisher.response.text
    record = await media.sessions.get(publisher.session_id)
    assert record is not None
    # The shard's counters include what earlier publishers sent it (other tests).
    baseline = (await media.router.stats(record.shard))["frames_received"]

    async def received() -> bool:
        stats = await media.router.stats(record.shard)
        # About 4 s of this publisher: audio (50/s) and video (15/s).
        return bool(stats["frames_received"] - baseline >= 250)

    await until(received, within=20, every=0.1)
    # Ending the session flushes the partial segment before DELETE answers.
    assert (await client.delete(publisher.location, headers=candidate)).status_code == 200

    base = f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}/recordings"
    listed = await client.get(base, headers=world.proctors["r1"])
    assert listed.status_code == 200, listed.text
    segments = listed.json()["segments"]
    assert segments, json.dumps(await media.router.stats(record.shard))
    assert {s["source"] for s in segments} == {"camera"}
    assert all(s["session"] == publisher.session_id for s in segments)

    keys = await list_keys(settings, "cn-east", f"{world.exam_id}/recordings/{cid}/")
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted(s["name"] for s in segments)
    assert await list_keys(settings, "cn-north", f"{world.exam_id}/") == []

    recorded: list[int] = []
    for segment in segments:
        data = await fetch(
            settings, "cn-east", f"{world.exam_id}/recordings/{cid}/{segment['name']}"
        )
        indices, audio, duration = open_segment(data)
        assert len(indices) == segment["frames"]
        assert audio == segment["audio_frames"] > 0
        assert abs(duration - len(indices) / FPS) < 0.25, (duration, len(indices))
        played = await client.get(segment["url"], headers=world.proctors["r1"])
        assert played.status_code == 200
        assert played.headers["content-type"] == "video/webm"
        assert played.content == data
        recorded += indices
    assert recorded == list(range(recorded[0], recorded[-1] + 1))
    assert len(recorded) >= 40

    last = max(s["end"] for s in segments)
    window = {"start": last + 60, "end": last + 120}
    later = await client.get(base, params=window, headers=world.proctors["r1"])
    assert later.json()["segments"] == []
    window = {"start": segments[0]["start"] + 0.1, "end": segments[0]["start"] + 0.2}
    inside = await client.get(base, params=window, headers=world.proctors["r1"])
    assert [s["name"] for s in inside.json()["segments"]] == [segments[0]["name"]]
    backwards = await client.get(base, params={"start": 10, "end": 5}, headers=world.proctors["r1"])
    assert backwards.json()["reason"] == "bad_time_range"
    missing = await client.get(f"{base}/{'0' * 32}-00000.webm", headers=world.proctors["r1"])
    assert missing.json()["reason"] == "recording_not_found"
    # Another room's proctor learns nothing; a candidate may not list at all.
    assert (await client.get(base, headers=world.proctors["r2"])).status_code == 404
    assert (await client.get(base, headers=candidate)).status_code == 403


async def test_talkback_is_not_recorded(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["4101"]})
    cid = world.candidate_ids["4101"]
    url = f"/v1/whip/exams/{world.exam_id}/rooms/r1/talkback?to={cid}"
    proctor = peers.keep(await webrtc.whip_publish(client, url, world.proctors["r1"], video=False))
    assert proctor.response.status_code == 201, proctor.response.text
    candidate = await joined_candidate(client, world.exam_id, "4101")
    hearing = peers.keep(await webrtc.whep_watch(client, "/v1/whep/me/talkback", candidate))
    await until(lambda: hearing.audio_frames >= 20, within=20)
    assert (await client.delete(proctor.location, headers=world.proctors["r1"])).status_code == 200
    # Had it been recorded, ending it would have stored a segment under the candidate.
    assert await list_keys(settings, world.region, f"{world.exam_id}/") == []
