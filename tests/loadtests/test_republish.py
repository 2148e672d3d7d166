"""A simulated candidate keeps its camera published: a session the media shard ends
under it (as a restarted or overloaded shard does) is published again, same face."""

from __future__ import annotations

import aiohttp
from fastapi import FastAPI

from infra.settings import Settings
from loadtests.journey import Candidate, Recorder
from loadtests.scenario import build_assets, create_exam, organiser_session
from tests.accounts.test_login import runtime_of
from tests.loadtests.test_fleet import PASSWORD, _organiser
from tests.support.wait import until


async def test_a_camera_ended_by_its_shard_is_published_again(
    app: FastAPI, settings: Settings
) -> None:
    media = runtime_of(app).media
    async with aiohttp.ClientSession(settings.gateway_url) as http:
        organiser = await organiser_session(http, await _organiser(app), PASSWORD)
        hosts = tuple(settings.media.host_addresses)
        scenario = await create_exam(http, organiser, 1, region="cn-north", hosts=hosts)
        recorder = Recorder()
        number = scenario.rooms["room000"][0]
        candidate = Candidate(number, scenario, build_assets(liveness=False), recorder, True)
        assert await candidate._login(http) == (True, "")
        assert await candidate._post(http, "/v1/me/consent", {"policy_version": "1"}, 204)
        assert await candidate._post(http, "/v1/me/join", {"network": "wifi"}, 200)
        await candidate._publish(http, "whip_publish", "a")
        first = candidate.publisher
        assert first is not None
        assert first.pc.connectionState == "connected"
        assert first.camera is not None
        first.camera.show("b")

        await candidate._keep_publishing(http)  # connected: nothing to do
        assert candidate.publisher is first
        record = await media.sessions.get(first.location.rsplit("/", 1)[1])
        assert record is not None
        await media.router.close_session(record.shard, record.id)
        await until(lambda: first.pc.connectionState in ("failed", "closed"), within=10)

        await candidate._keep_publishing(http)
        second = candidate.publisher
        try:
            assert second is not None
            assert second is not first
            assert second.pc.connectionState == "connected"
            assert second.camera is not None
            assert second.camera.showing == "b"
            assert recorder.connections_lost == {"closed": 1}
            assert [(s.step, s.ok) for s in recorder.steps] == [
                ("whip_publish", True),
                ("whip_republish", True),
            ]
            current = await media.sessions.get(second.location.rsplit("/", 1)[1])
            assert current is not None
            assert current.id != record.id
        finally:
            if second is not None:
                await second.close(http, candidate.headers)
