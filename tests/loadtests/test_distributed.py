"""The fleet spread over the test cluster's two Ray nodes, with every candidate behaviour.

One run, since each starts a world of its own: 23 candidates (3 with cameras) dealt over
two Ray workers, one per node (127.0.0.2 and a second node on 127.0.0.3), started at one
instant; worker 1 runs the lag drill, so the report must flag it. Each behaviour lands on
one candidate, and each is checked where the server keeps it: the media sessions (screen,
side, talk-back, a camera published again), the shard's ICE restarts, the room's journal
(a raised hand, a face review, a departure and a return, a late join). Mid-run the room
is told to reconnect, as a media drain does, and the cameras are published again at once.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from fastapi import FastAPI

from actors.media.sessions import MediaSession
from api.runtime import Runtime
from core import keys
from infra import services
from infra.processes import port_open
from infra.redis import text
from infra.settings import Settings
from infra.stack import LocalStack
from loadtests import fleet
from loadtests.behaviours import BEHAVIOURS
from loadtests.config import FleetConfig
from tests.loadtests.test_fleet import PASSWORD, _organiser, in_rooms, run_watching_progress
from tests.support.journal import room_journal

DURATION = 16.0
RAMP = 2.0


@pytest.fixture(scope="module")
def second_node(stack: LocalStack) -> Iterator[str]:
    """A second node of the session's cluster (127.0.0.3), gone after this module."""
    settings = stack.settings
    node = services.ray_node_process(settings, head=False, index=1)
    node.start()
    try:
        port = services.ray_node_port(settings, 1)
        node.wait_healthy(lambda: port_open(settings.ray_worker_ip, port), 60)
        deadline = time.monotonic() + 60
        while not any(
            n["Alive"] and n["NodeManagerAddress"] == settings.ray_worker_ip
            for n in ray.nodes()  # type: ignore[no-untyped-call]
        ):
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(0.5)
        yield settings.ray_worker_ip
    finally:
        node.stop(timeout=3.0)  # a throwaway node: `ray start --block` is slow to end on TERM


class Sightings:
    """Every media session the server holds, seen every half second during the run."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sessions: dict[str, MediaSession] = {}
        self.camera_seen = asyncio.Event()

    async def watch(self, stop: asyncio.Event) -> None:
        redis, store = self.runtime.redis, self.runtime.media.sessions
        while not stop.is_set():
            async for raw in redis.scan_iter(match=keys.media_session_key("*"), count=500):
                found = await store.get(text(raw).rsplit(":", 1)[1])
                if found is not None and found.exam.startswith("rehearsal"):
                    self.sessions.setdefault(found.id, found)
                    if found.source == "camera":
                        self.camera_seen.set()
            await asyncio.sleep(0.5)

    def of(self, exam: str, source: str, kind: str = "whip") -> list[MediaSession]:
        return [
            s
            for s in self.sessions.values()
            if s.exam == exam and s.source == source and s.kind == kind
        ]


async def _tell_to_reconnect(runtime: Runtime, sightings: Sightings, told: list[float]) -> None:
    """As a media drain does (cluster.drain): a `reconnect` into the cameras' room, once
    the timed behaviours are done (they end at 0.55 of the stay, plus the time away)."""
    await sightings.camera_seen.wait()
    await asyncio.sleep(0.72 * DURATION)
    (camera, *_) = [s for s in sightings.sessions.values() if s.source == "camera"]
    told.append(time.monotonic())
    event = {"type": "reconnect", "plane": "media", "reason": "drill", "retry_after": 1}
    await runtime.rooms.append(keys.room_key(camera.exam, camera.room), event)


async def test_a_fleet_over_two_ray_nodes_does_everything_candidates_do(
    app: FastAPI,
    settings: Settings,
    second_node: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runtime: Runtime = app.state.runtime
    fractions = {name: 0.34 if media else 0.05 for name, (_, media) in BEHAVIOURS.items()}
    config = FleetConfig(
        target=settings.gateway_url, candidates=23, media=3, proctors=1, ramp=RAMP,
        duration=DURATION, report=tmp_path / "report", hosts=tuple(settings.media.host_addresses),
        organiser=await _organiser(app), password=PASSWORD, heartbeat_every=2.0,
        ray_address=settings.ray_head_address, workers=2, worker_cpus=0.1, stall_worker=1,
        behaviours=fractions,
    )  # fmt: skip
    sightings, stop, told = Sightings(runtime), asyncio.Event(), list[float]()
    watching = asyncio.ensure_future(sightings.watch(stop))
    telling = asyncio.ensure_future(_tell_to_reconnect(runtime, sightings, told))
    try:
        summary, _broken, lines = await run_watching_progress(config)
    finally:
        stop.set()
        telling.cancel()
        await asyncio.gather(watching, telling, return_exceptions=True)
    exam = summary["fleet"]["exam"]

    # Merged: every candidate of both workers, each worker on its own node, its row kept.
    steps = summary["steps"]
    assert steps["login"]["count"] >= 23
    assert steps["join"]["count"] >= 23
    assert steps["exit"]["count"] == 23
    assert steps["whip_publish"]["count"] >= 3
    assert summary["peak_online"] >= 20
    rows = summary["workers"]
    assert [(w["worker"], w["kind"]) for w in rows] == [(0, "worker"), (1, "worker")]
    assert {w["node"] for w in rows} == {settings.ray_head_ip, second_node}
    assert sum(w["candidates"] for w in rows) == 23
    # While it ran, the progress line had both workers' live counts, asked of them.
    assert max(in_rooms(line) for line in lines) >= 20, lines[-3:]
    assert sorted(w["media"] for w in rows) == [1, 2]  # cameras dealt too
    assert all(w["samples"] > 0 and w["cpu_seconds"] > 0 for w in rows)
    # The drill's worker lagged, and the report says so.
    assert rows[1]["lagging"], rows[1]
    assert rows[1]["loop_lag_p99"] > config.lag_limit
    assert f"worker 1 on {rows[1]['node']}" in summary["generator"]["lagging"]
    assert "lagging: " in summary["generator"]["warning"]

    # Every behaviour was tried once and went through, counted in the report.
    outcomes = summary["behaviours"]
    for name in BEHAVIOURS:
        assert outcomes[name]["attempted"] == 1, (name, outcomes[name])
        assert outcomes[name]["succeeded"] == 1, (name, outcomes[name])
    number = _numbers_by_behaviour(tmp_path / "report", summary)
    cid = {n: runtime.exams.candidate_id(exam, n) for n in number.values()}

    # ...and where the server keeps it.
    assert [s.cid for s in sightings.of(exam, "screen")] == [cid[number["screen_share"]]]
    (side,) = sightings.of(exam, "side")
    assert side.owner == f"side:{exam}:{cid[number['side_camera']]}"  # the paired phone
    listeners = sightings.of(exam, "talkback", kind="whep")
    assert [s.cid for s in listeners] == [cid[number["talkback"]]]
    assert sightings.of(exam, "talkback")  # the proctor's voice to the room
    cameras = sightings.of(exam, "camera")
    dropped = [s for s in cameras if s.cid == cid[number["reconnect"]]]
    assert len(dropped) >= 2, dropped  # published again after the drop
    stats = await runtime.media.router.stats(cameras[0].shard)
    assert stats["ice_restarts"] >= 1
    room = keys.room_key(exam, cameras[0].room)
    journal = [event for _, event in await room_journal(runtime.redis, room)]
    kinds = {(e["type"], e.get("cid")) for e in journal}
    assert ("help", cid[number["raise_hand"]]) in kinds
    assert ("face_review_requested", cid[number["face_fail"]]) in kinds
    assert ("joined", cid[number["late"]]) in kinds
    came_back = [e["type"] for e in journal if e.get("cid") == cid[number["leave_return"]]]
    assert came_back.count("joined") >= 2, came_back
    assert "left" in came_back

    # Told to reconnect, every camera still in the room was published again at once.
    assert told, "the reconnect was never journaled"
    assert outcomes["server_reconnect"]["attempted"] >= 2, outcomes
    assert outcomes["server_reconnect"]["succeeded"] == outcomes["server_reconnect"]["attempted"]
    assert sum(w["reconnects_told"] for w in rows) == 2  # each worker's cameras heard it

    fleet.print_summary(summary, [], tmp_path / "report")
    printed = capsys.readouterr().out
    assert f"worker 1 on {second_node}: 11 candidates (1 cameras)" in printed
    assert printed.count("LAGGING") == sum(w["lagging"] for w in rows)
    assert "behaviour screen_share: attempted 1, succeeded 1, failed 0" in printed
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Generator shares" in page
    assert "Candidate behaviours" in page
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["workers"] == rows


def _numbers_by_behaviour(report: Path, summary: dict[str, object]) -> dict[str, str]:
    """Behaviour -> the candidate number that did it, from the steps it timed."""
    steps = {
        "screen_share": "screen_share", "side_camera": "side_camera",
        "talkback": "talkback_listen", "network_switch": "ice_restart",
        "reconnect": "reconnect", "raise_hand": "raise_hand", "face_fail": "face_fail",
        "leave_return": "leave_return",
    }  # fmt: skip
    with (report / "steps.csv").open(newline="") as rows:
        by_step = {r["step"]: r["actor"].removeprefix("candidate-") for r in csv.DictReader(rows)}
    found = {name: by_step[step] for name, step in steps.items()}
    # The late one logged in after the ramp, a quarter into the exam (counted from the
    # first login: the fleet's clock also covers the workers' start).
    with (report / "steps.csv").open(newline="") as rows:
        logins = {
            r["actor"].removeprefix("candidate-"): float(r["start_s"])
            for r in csv.DictReader(rows)
            if r["step"] == "login"
        }
    first = min(logins.values())
    (found["late"],) = [n for n, t in logins.items() if t - first > RAMP + 0.2 * DURATION]
    return found


def test_behaviours_are_dealt_to_the_fewest_first() -> None:
    from loadtests.behaviours import deal

    numbers = [f"{n}" for n in range(10)]
    media = {"0", "1", "2"}
    fractions = {name: 0.34 if m else 0.1 for name, (_, m) in BEHAVIOURS.items()}
    dealt = deal(fractions, numbers, media)
    given = [name for names in dealt.values() for name in names]
    assert sorted(given) == sorted(BEHAVIOURS)  # each behaviour once
    for number, names in dealt.items():
        camera_bound = [n for n in names if BEHAVIOURS[n][1]]
        assert not camera_bound or number in media
    assert sorted(len(dealt[n]) for n in media) == [1, 2, 2]
    # The whole-fleet ones went to candidates with none yet.
    assert all(len(names) == 1 for n, names in dealt.items() if n not in media)
    assert deal({}, numbers, media) == {}


def test_behaviour_and_worker_flags(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--candidates", "10", "--organiser", "o"]
    env = {"EXAMDAY_LOADTEST_PASSWORD": "p"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        config = fleet.config_from_args(
            [*base, "--media", "2", "--screen-share", "0.5", "--late", "0.1", "--ray",
             "127.0.0.2:6379", "--workers", "3", "--worker-cpus", "0.5", "--lag-limit", "0.1"]
        )  # fmt: skip
        assert config.behaviours == {"screen_share": 0.5, "late": 0.1}
        assert (config.workers, config.worker_cpus, config.lag_limit) == (3, 0.5, 0.1)
        assert config.switch_hosts == ("127.0.0.5",)
        for bad in (
            ["--media", "2", "--screen-share", "1.5"],  # not a fraction
            ["--side-camera", "0.1"],  # camera-bound, but no cameras
            ["--media", "2", "--proctors", "0", "--talkback", "0.5"],  # nobody talks back
            ["--worker-cpus", "0"],
        ):
            with pytest.raises(SystemExit) as exit_info:
                fleet.config_from_args([*base, *bad])
            assert exit_info.value.code == 2, bad
            assert "usage: examday loadtest" in capsys.readouterr().err
