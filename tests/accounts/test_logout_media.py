"""A candidate's logout ends what they publish: their camera and the side camera of the phone
they paired (a real aiortc peer publishing by WHIP with the pairing token) end on the media
shard, as a proctor's end ends them, rather than running on until the phone goes away."""

from __future__ import annotations

import secrets

import httpx
from fastapi import FastAPI

from actors.media.pairing import DEVICE_HEADER
from actors.media.shard import shard_name
from tests.accounts.test_login import runtime_of
from tests.support import webrtc
from tests.support.factories import auth, joined_candidate, new_exam
from tests.support.wait import until


async def test_logout_ends_the_candidates_camera_and_side_device(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    media = runtime.media

    async def reporting() -> bool:
        return bool(await media.router.loads([shard_name(0)]))

    await until(reporting, within=60, every=0.1)
    world = await new_exam(client, runtime, {"r1": ["6301"]})
    candidate = await joined_candidate(client, world.exam_id, "6301")
    pairing = await client.post("/v1/me/pairing", headers=candidate)
    assert pairing.status_code == 201, pairing.text
    phone = httpx.Headers(
        {**auth(pairing.json()["token"]), DEVICE_HEADER: secrets.token_urlsafe(16)}
    )
    peers: list[webrtc.WhipPublisher] = []
    try:
        side = await webrtc.whip_publish(client, "/v1/whip/me/side", phone, audio=False)
        peers.append(side)
        assert side.response.status_code == 201, side.response.text
        camera = await webrtc.whip_publish(client, "/v1/whip/me/camera", candidate)
        peers.append(camera)
        assert camera.response.status_code == 201, camera.response.text
        record = await media.sessions.get(side.session_id)
        assert record is not None
        live = (await media.router.stats(record.shard))["live_sessions"]

        out = await client.delete("/v1/sessions/current", headers=candidate)
        assert out.status_code == 204, out.text

        assert await media.sessions.get(side.session_id) is None
        assert await media.sessions.get(camera.session_id) is None

        async def closed_on_the_shard() -> bool:
            stats = await media.router.stats(record.shard)
            return bool(stats["live_sessions"] <= live - 2)

        await until(closed_on_the_shard, within=20, every=0.1)
        # And the phone cannot start again: its token died with the candidate's session.
        again = await webrtc.whip_publish(client, "/v1/whip/me/side", phone, audio=False)
        peers.append(again)
        assert (again.response.status_code, again.response.json()["reason"]) == (
            401,
            "session_ended",
        )
    finally:
        for peer in peers:
            await peer.close()
