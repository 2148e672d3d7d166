"""The load tester against the platform the tests run: a small fleet, then its verdicts."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI

from infra.settings import Settings, settings_to_env
from loadtests import fleet
from loadtests.config import FleetConfig
from loadtests.parts import LAG_TICK_S, split
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
    )
    summary, broken = await fleet.run_fleet(config)
    steps = summary["steps"]
    failed = {name: s["errors_by_reason"] for name, s in steps.items() if s["errors"]}
    assert failed == {}
    for name in ("login", "consent", "version_check", "network_check", "join", "heartbeat", "exit"):
        assert steps[name]["count"] >= 10, name
    for name in ("enrol", "verify", "liveness", "whip_publish"):
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
    assert "<svg" in (tmp_path / "report" / "report.html").read_text()
    # The generator watched its own loop all along (one sample per tick).
    assert summary["generator"]["samples"] >= config.duration / LAG_TICK_S / 2


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
    plan = [(i, f"n{i}", i % 5 == 0, False) for i in range(20)]
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
