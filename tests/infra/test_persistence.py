"""What an exam day writes survives `examday down` / `examday up` and a kill -9 of the
supervisor: staff accounts, the exam and its roster, a candidate's consent, the room's
journal with its incident, a legal hold and the audit chain's head (all kept only in Redis,
now with its append-only file in the state directory)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from core import keys
from infra.audit import AuditLog
from infra.objectstore import ObjectStores
from infra.processes import pid_alive
from infra.settings import Settings
from infra.settings.ops import OpsSettings
from infra.stack import isolated_settings
from tests.support import examday_up
from tests.support.factories import PASSWORD, auth, roster_csv

ROOM = "r1"
NUMBERS = ["0001", "0002"]
ORGANISER = "org-persist"
PROCTOR = "pro-persist"


@dataclass
class Day:
    exam_id: str
    cid: str


def _login(http: httpx.Client, username: str) -> httpx.Headers:
    response = http.post("/v1/staff/sessions", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return auth(response.json()["token"])


def _candidate(http: httpx.Client, exam_id: str, number: str) -> tuple[httpx.Headers, str]:
    response = http.post("/v1/sessions", json={"exam_no": exam_id, "candidate_no": number})
    assert response.status_code == 201, response.text
    return auth(response.json()["token"]), response.json()["candidate"]


def _write_the_day(settings: Settings) -> Day:
    added = examday_up.run(
        settings, "staff", "add", "--username", ORGANISER, EXAMDAY_NEW_PASSWORD=PASSWORD
    )
    assert added.returncode == 0, added.stdout + added.stderr
    with httpx.Client(base_url=settings.gateway_url, timeout=60) as http:
        organiser = _login(http, ORGANISER)
        exam_id = "expersist1"
        now = datetime.now(UTC)
        exam = {
            "id": exam_id,
            "title": "Mathematics",
            "starts_at": (now - timedelta(minutes=5)).isoformat(),
            "ends_at": (now + timedelta(hours=2)).isoformat(),
            "region": "cn-north",
        }
        assert http.post("/v1/exams", json=exam, headers=organiser).status_code == 201
        roster = http.post(
            f"/v1/exams/{exam_id}/roster",
            content=roster_csv(exam_id, {ROOM: NUMBERS}),
            headers={**organiser, "content-type": "text/csv"},
        )
        assert roster.status_code == 200, roster.text
        created = http.post(
            "/v1/staff",
            json={"username": PROCTOR, "password": PASSWORD, "role": "proctor"},
            headers=organiser,
        )
        assert created.status_code == 201, created.text
        assigned = http.put(
            f"/v1/exams/{exam_id}/rooms/{ROOM}/proctors/{PROCTOR}", headers=organiser
        )
        assert assigned.status_code == 204, assigned.text
        candidate, cid = _candidate(http, exam_id, NUMBERS[0])
        consent = http.post("/v1/me/consent", json={"policy_version": "1"}, headers=candidate)
        assert consent.status_code == 204, consent.text
        joined = http.post("/v1/me/join", json={"network": "wifi"}, headers=candidate)
        assert joined.status_code == 200, joined.text
        incident = http.post(
            f"/v1/exams/{exam_id}/rooms/{ROOM}/incidents",
            json={"candidate": cid, "type": "phone_seen", "severity": "high"},
            headers=_login(http, PROCTOR),
        )
        assert incident.status_code == 201, incident.text
        hold = http.post(
            f"/v1/exams/{exam_id}/holds",
            json={"reference": "case-7", "reason": "appeal"},
            headers=organiser,
        )
        assert hold.status_code == 201, hold.text
    return Day(exam_id, cid)


def _read_the_day(settings: Settings, day: Day) -> dict[str, Any]:
    """Everything the day wrote, as the platform reads it back (logins that must work)."""
    with httpx.Client(base_url=settings.gateway_url, timeout=60) as http:
        organiser = _login(http, ORGANISER)
        proctor = _login(http, PROCTOR)
        exam = http.get(f"/v1/exams/{day.exam_id}", headers=organiser)
        assert exam.status_code == 200, exam.text
        room = http.get(f"/v1/exams/{day.exam_id}/rooms/{ROOM}", headers=proctor)
        assert room.status_code == 200, room.text
        holds = http.get(f"/v1/exams/{day.exam_id}/holds", headers=organiser)
        assert holds.status_code == 200, holds.text
        # The roster still logs the candidate in, and the recorded consent still lets
        # them join without consenting again.
        candidate, cid = _candidate(http, day.exam_id, NUMBERS[0])
        assert cid == day.cid
        joined = http.post("/v1/me/join", json={"network": "wifi"}, headers=candidate)
        assert joined.status_code == 200, joined.text
        view = room.json()
    return {
        "exam": exam.json(),
        "roster": sorted(view["roster"]),
        "incidents": view["incidents"],
        "holds": [(h["id"], h["reference"]) for h in holds.json()["holds"]],
        "audit_head": asyncio.run(_audit_head(settings)),
    }


async def _audit_head(settings: Settings) -> tuple[int, str]:
    redis = Redis.from_url(settings.redis_url)
    try:
        return await AuditLog(ObjectStores(settings), redis, "cn-north", keys.STATE_NAMES).head()
    finally:
        await redis.aclose()


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 60
    while any(pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, [pid for pid in pids if pid_alive(pid)]
        time.sleep(0.2)


def test_the_day_survives_down_up_and_a_killed_supervisor(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "state", ops=OpsSettings(controller_autostart=False))
    output = tmp_path / "up.log"

    up = examday_up.start(settings, output)
    try:
        day = _write_the_day(settings)
        before = _read_the_day(settings, day)
    finally:
        examday_up.down(up)
    assert before["incidents"], before
    assert before["holds"], before
    assert before["audit_head"][0] > 0, before

    up = examday_up.start(settings, output)
    try:
        assert _read_the_day(settings, day) == before
        # The supervisor dies without a word: its children follow (PR_SET_PDEATHSIG),
        # Redis writing out its append-only file as it goes.
        pids = [int(p) for p in up.manifest()["services"].values()]
        os.kill(up.process.pid, signal.SIGKILL)
        up.process.wait(30)
        _wait_gone(pids)
    except BaseException:
        examday_up.down(up)
        raise

    up = examday_up.start(settings, output)
    try:
        assert _read_the_day(settings, day) == before
    finally:
        examday_up.down(up)
