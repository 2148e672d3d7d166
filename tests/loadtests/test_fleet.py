"""The load tester against the platform the tests run: a small fleet, then its verdicts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from fastapi import FastAPI

from infra.progress import Progress
from infra.settings import Settings, settings_to_env
from infra.stack import read_manifest
from loadtests import charts, fleet
from loadtests.config import FleetConfig
from loadtests.journey import Recorder, Step
from loadtests.parts import LAG_TICK_S, Plan, split
from loadtests.report import BadThreshold, parse_threshold
from tests.accounts.test_login import runtime_of

PASSWORD = "fleet-organiser-password"


async def _organiser(app: FastAPI) -> str:
    username = f"fleet-{secrets.token_hex(3)}"
    await runtime_of(app).staff.create(username, PASSWORD, "organiser", None)
    return username


async def test_small_fleet_walks_every_step(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    config = FleetConfig(
        target=settings.gateway_url,
        candidates=10,
        media=2,
        proctors=1,
        ramp=3.0,
        duration=24.0,
        report=tmp_path / "report",
        switch_faces=1,
        hosts=tuple(settings.media.host_addresses),
        organiser=await _organiser(app),
        password=PASSWORD,
        thresholds=("tracks_missing == 0", "login.p99 < 5s"),
        heartbeat_every=2.0,
        state_dir=settings.state_dir,  # the test stack's processes, sampled for the report
        processes=2,  # the rehearsals' way: cameras in a process of their own
    )
    summary, broken, lines = await run_watching_progress(config)
    steps = summary["steps"]
    failed = {name: s["errors_by_reason"] for name, s in steps.items() if s["errors"]}
    assert failed == {}
    for name in ("login", "consent", "version_check", "network_check", "join", "heartbeat", "exit"):
        assert steps[name]["count"] >= 10, name
    assert "enrol" not in steps  # the organiser enrolled their faces at set-up
    for name in ("verify", "liveness", "whip_publish"):
        assert steps[name]["count"] == 2, name
    # The proctor watches the room's publishing candidates and gets their media.
    assert summary["tracks"]["expected"] == len(summary["tracks"]["per_track"]) > 0
    assert summary["tracks"]["missing"] == 0
    assert all(t["frames"] > 0 and t["packets"] > 0 for t in summary["tracks"]["per_track"])
    # The injected face switch raised the expected incident.
    assert summary["incidents"]["expected"] == {"identity_mismatch": 1}
    assert summary["incidents"]["raised"].get("identity_mismatch", 0) >= 1
    assert summary["incidents"]["missing"] == 0
    assert broken == []
    written = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert written["tracks"]["received"] == summary["tracks"]["received"]
    assert (tmp_path / "report" / "steps.csv").read_text().count("\n") == sum(
        s["count"] for s in steps.values()
    ) + 1
    _assert_report_covers_the_run(tmp_path / "report", config, media=True)
    # The generator watched its own loop all along (one sample per tick).
    assert summary["generator"]["samples"] >= config.duration / LAG_TICK_S / 2
    # While it ran, the progress line had the generator processes' live counts.
    assert max(in_rooms(line) for line in lines) == config.candidates, lines[-3:]
    # Arrivals too, as the processes counted them: the schedule (3 s of ramp) would have
    # had everyone arrive before the processes, started 5 s ahead of their first, had
    # anyone in a room.
    everyone = next(line for line in lines if arrived(line) == config.candidates)
    assert in_rooms(everyone) > 0, everyone


async def run_watching_progress(
    config: FleetConfig,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """`run_fleet` with a (quiet) progress line, and what that line said every half second
    while the fleet ran."""
    progress = Progress("examday loadtest", quiet=True)
    lines: list[str] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.5)
            if progress.render is not None:
                lines.append(progress.render())

    watching = asyncio.ensure_future(watch())
    try:
        summary, broken = await fleet.run_fleet(config, progress)
    finally:
        watching.cancel()
    return summary, broken, lines


def in_rooms(line: str) -> int:
    """The fleet-wide count of candidates in rooms that a progress line gives (0 if none)."""
    return _count(r"\bin rooms ([\d,]+)", line)


def arrived(line: str) -> int:
    """The count of candidates arrived that a progress line gives (0 if none)."""
    return _count(r"\barrived ([\d,]+)/", line)


def _count(pattern: str, line: str) -> int:
    found = re.search(pattern, line)
    return int(found.group(1).replace(",", "")) if found else 0


async def test_a_threshold_that_cannot_hold_fails_the_run(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **settings_to_env(settings),
        "EXAMDAY_LOADTEST_ORGANISER": await _organiser(app),
        "EXAMDAY_LOADTEST_PASSWORD": PASSWORD,
    }
    argv = [
        sys.executable, "-m", "cluster.cli", "loadtest", "--candidates", "3", "--ramp", "1",
        "--duration", "2", "--proctors", "0", "--target", settings.gateway_url, "--processes", "2",
        "--report", str(tmp_path / "r"), "--threshold", "login.p99 < 0.0001s",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 1, output.decode()
    assert b"THRESHOLD BROKEN: login.p99 < 0.0001s" in output
    # Two generator processes ran the three candidates between them.
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["fleet"]["processes"] == 2
    assert summary["steps"]["login"]["count"] == 3
    assert summary["generator"]["samples"] > 0


def _assert_report_covers_the_run(directory: Path, config: FleetConfig, *, media: bool) -> None:
    """Every chart of the report is drawn from the run's records and spans the run: each
    series within its bounds, latency from the login storm to the departures, candidates
    in rooms through ramp, plateau and departure, media tracks and server components
    sampled all along, the thresholds marked."""
    run = charts.load_run(directory)
    start, end = run.start, run.end
    assert 0.0 <= start < end
    drawn = charts.figures([run])
    for name, figure in drawn.items():
        for trace in figure.data:
            x = [float(v) for v in trace.x or ()]
            assert not x or start <= min(x) <= max(x) <= end, (name, trace.name, x[:1], x[-1:])
    width = charts.bucket_seconds([run])
    latency_x = [float(v) for t in drawn["latency"].data for v in t.x or ()]
    assert min(latency_x) <= start + config.ramp + width
    assert max(latency_x) >= end - 3 * width - 2.0
    # Candidates in rooms: from 0 at the start, up to all of them, held, back to 0.
    x, y = charts.online_series(run)
    assert (x[0], y[0]) == (start, 0)
    assert x[-1] == end
    assert y[-1] == 0
    assert max(y) == config.candidates
    reached = x[y.index(max(y))]
    left = next(t for t, n in zip(x, y, strict=True) if t > reached and n < max(y))
    assert left - reached >= config.duration / 2, (reached, left)
    # The thresholds are drawn on the charts they name.
    for text in config.thresholds:
        name, _, limit = parse_threshold(text)
        chart, unit = ("latency", 1000.0) if "." in name else ("errors", 1.0)
        if name in ("tracks_missing", "incidents_missing"):
            continue  # counts of the whole run: in the report's table, not on a chart
        marks = [s.y0 for s in drawn[chart].layout.shapes if s.line.dash == "dot"]
        assert limit * unit in marks, (text, marks)
    if media:
        tracks = run.series["tracks"]
        assert {t["candidate"] for t in tracks} == {
            t["candidate"] for t in run.summary["tracks"]["per_track"]
        }
        assert all(s["kbps"] >= 0 and 0 <= s["loss_pct"] <= 100 for s in tracks)
        times = sorted(s["t"] for s in tracks)
        assert times[-1] - times[0] >= config.duration / 2
        server = run.series["server"]
        assert len(server) >= 3
        # Every service of the stack in every sample (followed across restarts), up.
        assert config.state_dir is not None
        manifest = read_manifest(config.state_dir)
        assert manifest is not None
        assert {"redis", "seaweedfs"} <= set(manifest["services"])
        for sample in server:
            assert set(manifest["services"]) <= set(sample)
        for name in ("redis", "seaweedfs"):
            assert not server[-1][name].get("down"), (name, _seen_by_the_sampler(manifest, name))
            assert server[-1][name]["rss_mib"] > 0, name
        assert server[-1]["t"] - server[0]["t"] >= config.duration / 2
    page = (directory / "report.html").read_text()
    assert "<script src" not in page
    assert "Plotly.newPlot" in page


def _seen_by_the_sampler(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """What a failed check needs: the pid the manifest names, what runs there, and every
    process that looks like the service."""
    pid = int(manifest["services"][name])
    word = {"redis": "redis-server", "seaweedfs": "weed"}[name]
    try:
        named: Any = psutil.Process(pid).as_dict(["cmdline", "create_time", "status"])
    except psutil.Error as exc:
        named = repr(exc)
    lookalikes = [
        (p.pid, p.info["create_time"], p.info["status"])
        for p in psutil.process_iter(["cmdline", "create_time", "status"])
        if word in " ".join(p.info["cmdline"] or ())
    ]
    return {"manifest": manifest, "named": named, "lookalikes": lookalikes, "now": time.time()}


async def test_compare_sets_two_runs_side_by_side(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    organiser = await _organiser(app)
    runs = []
    for name, candidates in (("before", 3), ("after", 4)):
        config = FleetConfig(
            target=settings.gateway_url, candidates=candidates, media=0, proctors=0, ramp=1.0,
            duration=4.0, report=tmp_path / name, organiser=organiser, password=PASSWORD,
            heartbeat_every=1.0, thresholds=("errors == 0",),
        )  # fmt: skip
        summary, broken = await fleet.run_fleet(config)
        assert summary["errors"] == 0
        assert broken == []
        _assert_report_covers_the_run(tmp_path / name, config, media=False)
        runs.append(summary)
    out = tmp_path / "compared.html"
    argv = ["compare", str(tmp_path / "before"), str(tmp_path / "after"), "--out", str(out)]
    assert fleet.main(argv) == 0
    page = out.read_text()
    for summary in runs:
        assert summary["fleet"]["exam"] in page
    assert "examday rehearsals compared: before vs after" in page
    assert "<script src" not in page
    # Key figures side by side with their deltas: 3 then 4 candidates at the peak.
    assert "<td>candidates in rooms, peak</td><td>3</td><td>4</td><td>+1</td>" in page


def test_bad_flags_give_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--candidates", "0"],
        ["--candidates", "5", "--media", "6"],
        ["--candidates", "5", "--threshold", "login.p99 soon"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            fleet.config_from_args(argv)
        assert exit_info.value.code == 2
        assert "usage: examday loadtest" in capsys.readouterr().err


def test_media_candidates_get_a_generator_process_of_their_own() -> None:
    plan: Plan = [(i, f"n{i}", i % 5 == 0, False, ()) for i in range(20)]
    media, *http_only = split(plan, 3)
    assert [item[0] for item in media] == [0, 5, 10, 15]
    assert len(http_only) == 2
    assert sorted(item[0] for part in http_only for item in part) == [i for i in range(20) if i % 5]
    assert all(not item[2] for part in http_only for item in part)
    # One process, or a fleet of one kind: everything is dealt round robin.
    assert split(plan, 1) == [plan]
    assert [len(part) for part in split(plan[1:5], 3)] == [2, 1, 1]


def test_thresholds_parse() -> None:
    assert parse_threshold("login.p99 < 1s") == ("login.p99", "<", 1.0)
    assert parse_threshold("join.p95<=250ms") == ("join.p95", "<=", 0.25)
    assert parse_threshold("tracks_missing == 0") == ("tracks_missing", "==", 0.0)
    with pytest.raises(BadThreshold):
        parse_threshold("login.p99 about 1s")


def test_shares_are_merged_on_the_fleets_clock() -> None:
    """Each generator process counts time from its own epoch and candidates in rooms of its
    own: the fleet's record puts their steps on its clock and sums their counts."""
    fleet_recorder = Recorder(epoch=1000.0)
    first, second = Recorder(epoch=1005.0), Recorder(epoch=1006.0)
    first.steps.append(Step("candidate-1", "login", 1.0, 0.01, True))
    first.online += [(2.0, 1), (3.0, 2), (9.0, 1), (10.0, 0)]
    second.online += [(1.5, 1), (8.5, 0)]
    fleet.merge(fleet_recorder, [first, second])
    assert [s.start for s in fleet_recorder.steps] == [6.0]
    assert fleet_recorder.online == [(7.0, 1), (7.5, 2), (8.0, 3), (14.0, 2), (14.5, 1), (15.0, 0)]
