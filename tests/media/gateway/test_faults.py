"""Media shards that are full, killed or drained: clients are told, come back, lose nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping

import httpx
from fastapi import FastAPI

from actors.media.client import MediaPlane
from actors.media.shard import shard_name
from core import keys
from infra.settings import Settings
from tests.media.gateway.conftest import Peers, dedicated_shard, runtime_of
from tests.media.gateway.test_recordings import list_keys
from tests.support import webrtc
from tests.support.factories import joined_candidate, new_exam
from tests.support.wait import until

RECOVERY_S = 10.0


async def segment_names(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str]
) -> list[str]:
    listed = await client.get(url, headers=headers)
    assert listed.status_code == 200, listed.text
    return [s["name"] for s in listed.json()["segments"]]


async def test_a_full_shard_answers_503_and_a_drained_one_gives_its_room_away(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["6001", "6002"]})
    first = await joined_candidate(client, world.exam_id, "6001")
    second = await joined_candidate(client, world.exam_id, "6002")
    room = keys.room_key(world.exam_id, "r1")
    async with dedicated_shard(media, settings, room, max_sessions=1) as shard:
        admitted = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", first))
        assert admitted.response.status_code == 201, admitted.response.text
        refused = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", second))
        assert refused.response.status_code == 503
        assert refused.response.json()["reason"] == "shard_full"
        assert int(refused.response.headers["retry-after"]) >= 1
        stats = await media.router.stats(shard)
        assert (stats["live_sessions"], stats["peer_connections_created"]) == (1, 1)
        cid = world.candidate_ids["6002"]
        assert (
            await media.sessions.current(keys.media_publisher_key(world.exam_id, cid, "camera"))
            is None
        )

        # Drained, the shard takes no more sessions: its room moves to a live shard.
        drained = await media.router.drain(shard)
        assert drained["live_sessions"] == 0
        moved = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", second))
        assert moved.response.status_code == 201, moved.response.text
        record = await media.sessions.get(moved.session_id)
        assert record is not None
        assert record.shard == shard_name(0)
        assert await runtime.redis.hget(keys.MEDIA_ROOMS, room) == shard_name(0).encode()


async def test_a_killed_shard_restarts_and_clients_are_back_within_seconds(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["6101"]})
    cid = world.candidate_ids["6101"]
    candidate = await joined_candidate(client, world.exam_id, "6101")
    proctor = world.proctors["r1"]
    watch_url = f"/v1/whep/exams/{world.exam_id}/rooms/r1/candidates/{cid}"
    recordings = f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}/recordings"
    room = keys.room_key(world.exam_id, "r1")
    async with dedicated_shard(
        media, settings, room, segment_seconds=1.0, load_report_interval_s=0.5
    ) as shard:
        publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
        viewer = peers.keep(await webrtc.whep_watch(client, watch_url, proctor))
        assert viewer.response.status_code == 201, viewer.response.text
        await until(lambda: len(viewer.indices) >= 15, within=20)

        async def two_segments() -> bool:
            return len(await segment_names(client, recordings, proctor)) >= 2

        await until(two_segments, within=20, every=0.1)
        stored = await segment_names(client, recordings, proctor)
        pid = (await media.router.stats(shard))["pid"]

        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        await publisher.close()  # the clients notice their peer connections failed...
        await viewer.close()
        # ...and POST their offers again, as 503 + Retry-After tell them to.
        again = peers.keep(await repost(client, "/v1/whip/me/camera", candidate, killed))
        watching = peers.keep(await rewatch(client, watch_url, proctor, killed))
        assert again.response.status_code == 201, again.response.text
        assert watching.response.status_code == 201, watching.response.text
        await until(lambda: len(watching.indices) >= 10, within=RECOVERY_S)
        print(f"\nmedia flowing again {time.monotonic() - killed:.1f} s after kill -9")
        assert (await media.router.ping(shard))["pid"] != pid

        # Segments stored before the crash are still listed and in the exam's bucket.
        assert set(stored) <= set(await segment_names(client, recordings, proctor))
        listed = await list_keys(settings, world.region, f"{world.exam_id}/recordings/{cid}/")
        assert set(stored) <= {key.rsplit("/", 1)[1] for key in listed}


async def test_a_shard_too_busy_to_answer_keeps_its_room_until_silent_for_long(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    """Moving a room off a shard that still carries its publishers would split the room
    (viewers sent to the new shard find nobody publishing): a shard that is alive but
    does not answer (here: SIGSTOP) keeps its room and callers get 503, until it has
    not reported for `gone_after_s`."""
    world = await new_exam(client, runtime_of(app), {"r1": ["6301"]})
    cid = world.candidate_ids["6301"]
    candidate = await joined_candidate(client, world.exam_id, "6301")
    room = keys.room_key(world.exam_id, "r1")
    redis = runtime_of(app).redis
    async with dedicated_shard(
        media, settings, room, load_report_interval_s=0.5, gone_after_s=6.0
    ) as shard:
        pid = (await media.router.ping(shard))["pid"]

        async def reported() -> bool:
            return bool(
                await redis.exists(keys.media_load_key(shard), keys.media_seen_key(shard)) == 2
            )

        await until(reported, within=5, every=0.1)
        os.kill(pid, signal.SIGSTOP)
        try:

            async def report_lapsed() -> bool:
                return not await redis.exists(keys.media_load_key(shard))

            await until(report_lapsed, within=5, every=0.1)
            busy = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
            assert busy.response.status_code == 503, busy.response.text
            assert busy.response.json()["reason"] == "media_busy"
            assert int(busy.response.headers["retry-after"]) >= 1
            assert await redis.hget(keys.MEDIA_ROOMS, room) == shard.encode()
            camera = keys.media_publisher_key(world.exam_id, cid, "camera")
            assert await media.sessions.current(camera) is None

            async def silent_for_long() -> bool:
                return not await redis.exists(keys.media_seen_key(shard))

            await until(silent_for_long, within=10, every=0.1)
            moved = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
            assert moved.response.status_code == 201, moved.response.text
            assert await redis.hget(keys.MEDIA_ROOMS, room) == shard_name(0).encode()
        finally:
            os.kill(pid, signal.SIGCONT)


async def repost(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], since: float
) -> webrtc.WhipPublisher:
    while True:
        publisher = await webrtc.whip_publish(client, url, headers)
        if publisher.response.status_code != 503 or time.monotonic() - since > RECOVERY_S:
            return publisher
        await publisher.close()
        await asyncio.sleep(min(float(publisher.response.headers["retry-after"]), 1.0))


async def rewatch(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], since: float
) -> webrtc.WhepViewer:
    while True:
        viewer = await webrtc.whep_watch(client, url, headers)
        if viewer.response.status_code != 503 or time.monotonic() - since > RECOVERY_S:
            return viewer
        await viewer.close()
        await asyncio.sleep(min(float(viewer.response.headers["retry-after"]), 1.0))


async def test_a_stopped_shard_flushes_its_recordings(
    client: httpx.AsyncClient, app: FastAPI, media: MediaPlane, settings: Settings, peers: Peers
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["6201"]})
    cid = world.candidate_ids["6201"]
    candidate = await joined_candidate(client, world.exam_id, "6201")
    recordings = f"/v1/exams/{world.exam_id}/rooms/r1/candidates/{cid}/recordings"
    proctor = world.proctors["r1"]
    room = keys.room_key(world.exam_id, "r1")
    async with dedicated_shard(media, settings, room) as shard:  # 30 s segments
        publisher = peers.keep(await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate))
        assert publisher.response.status_code == 201, publisher.response.text

        async def receiving() -> bool:
            return bool((await media.router.stats(shard))["frames_received"] >= 100)

        await until(receiving, within=20, every=0.1)
        assert await segment_names(client, recordings, proctor) == []
        # Ray's graceful exit, as when a node is drained: the partial segment is flushed.
        (await media.router.handle(shard)).__ray_terminate__.remote()

        async def flushed() -> bool:
            return len(await segment_names(client, recordings, proctor)) == 1

        await until(flushed, within=30, every=0.1)
