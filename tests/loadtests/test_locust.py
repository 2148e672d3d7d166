"""The locustfile run by Locust itself, headless, against the test gateway: alone and in
Locust's distributed mode (a master and two workers, `--processes 2`)."""

from __future__ import annotations

import asyncio
import csv
import os
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI

from infra.settings import Settings
from loadtests.parts import http_session
from loadtests.scenario import create_exam, organiser_session
from tests.loadtests.test_fleet import PASSWORD, _organiser

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
USERS = 4


async def _exam(app: FastAPI, settings: Settings) -> str:
    async with http_session(settings.gateway_url, 4) as http:
        organiser = await organiser_session(http, await _organiser(app), PASSWORD)
        scenario = await create_exam(
            http, organiser, USERS, region="cn-north", hosts=("127.0.0.1",)
        )
    return scenario.exam_id


async def _locust(
    settings: Settings, exam: str, out: Path, *extra: str
) -> dict[str, dict[str, str]]:
    """Run Locust headless for a few seconds; its stats CSV rows by request name."""
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", settings.gateway_url, "--users", str(USERS), "--spawn-rate", str(USERS),
        "--run-time", "6s", "--exam", exam, "--first-candidate", "100000",
        "--candidates", str(USERS), "--csv", str(out / "run"), "--loglevel", "WARNING", *extra,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv, env=dict(os.environ), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, cwd=out,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode()[-4000:]
    with (out / "run_stats.csv").open() as stats:
        return {row["Name"]: row for row in csv.DictReader(stats)}


@pytest.mark.parametrize("mode", ["standalone", "distributed"])
async def test_locust_runs_the_http_journey_headless(
    app: FastAPI, settings: Settings, tmp_path: Path, mode: str
) -> None:
    exam = await _exam(app, settings)
    extra = ["--processes", "2"] if mode == "distributed" else []
    rows = await _locust(settings, exam, tmp_path, "--exclude-tags", "logs", *extra)
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) == 0, rows
    # Every user logged in (as a candidate of its own) and joined; the heartbeat task ran;
    # the task tagged `logs` was left out as Locust's own --exclude-tags asked.
    assert int(rows["/v1/sessions"]["Request Count"]) == USERS
    assert int(rows["/v1/me/join"]["Request Count"]) == USERS
    assert int(rows["/v1/me/heartbeat"]["Request Count"]) >= USERS
    assert "/v1/logs" not in rows
    assert int(total["Request Count"]) >= 6 * USERS
