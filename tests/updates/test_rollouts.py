"""Version checks during staged rollouts, the crash gate, and freeze windows."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
from fastapi import FastAPI

from actors.updates.rollout import Gate, Rollout, bucket
from api.runtime import Runtime
from core import keys
from tests.ingest.helpers import ndjson, new_device, record, runtime_of
from tests.support.factories import consenting_candidate, new_exam, new_release_manager
from tests.updates.helpers import channel, publish, seed_rollout


async def _check(
    client: httpx.AsyncClient, platform: str, chan: str, version: str, device: str, **extra: str
) -> dict[str, Any]:
    body = {"platform": platform, "channel": chan, "version": version, "device_id": device}
    response = await client.post("/v1/updates/check", json={**body, **extra})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _devices_around(
    runtime: Runtime, platform: str, chan: str, version: str, percent: int
) -> tuple[str, str]:
    """A device inside the rollout's first `percent` and one outside it."""
    inside = outside = None
    for _ in range(2000):
        device = new_device()
        pseudonym = runtime.updates.pseudonyms.device(device)
        if bucket(pseudonym, platform, chan, version) < percent:
            inside = inside or device
        else:
            outside = outside or device
        if inside and outside:
            return inside, outside
    raise AssertionError("no devices on both sides of the rollout")


async def test_version_check_answers_every_case(client: httpx.AsyncClient, app: FastAPI) -> None:
    runtime = runtime_of(app)
    _, manager = await new_release_manager(client, runtime)
    chan = channel()
    installer = secrets.token_bytes(5000)
    await publish(client, manager, "android", chan, "1.0.0")
    await seed_rollout(runtime, "android", chan, "1.0.0", previous=None, step=4, state="complete")
    await publish(
        client, manager, "android", chan, "2.0.0", min_supported="1.5", installer=installer
    )
    await seed_rollout(runtime, "android", chan, "2.0.0", previous="1.0.0", step=2)  # 20%
    inside, outside = _devices_around(runtime, "android", chan, "2.0.0", 20)

    cases = [
        (inside, "1.0.0", "required_update", "2.0.0"),  # below 2.0.0's minimum
        (inside, "1.6", "optional_update", "2.0.0"),
        (inside, "2.0.0", "up_to_date", None),
        (outside, "0.9", "optional_update", "1.0.0"),  # the stable release
        (outside, "1.0.0", "up_to_date", None),
        (outside, "2.0.0", "up_to_date", None),
    ]
    for device, version, status, offered in cases:
        for region in ("cn-north", "cn-east"):
            answer = await _check(client, "android", chan, version, device, region=region)
            again = await _check(client, "android", chan, version, device, region=region)
            assert answer["status"] == status, (device == inside, version, answer)
            assert (answer.get("offered") or {}).get("version") == offered
            assert again["status"] == answer["status"]  # a device's bucket does not move

    offer = await _check(client, "android", chan, "1.6", inside)
    url = offer["download"]["url"]
    assert urlparse(url).hostname == "127.0.0.1"
    async with httpx.AsyncClient() as s3:
        downloaded = (await s3.get(url)).content
    manifest = json.loads(offer["manifest"])
    assert manifest["installer"]["sha256"] == hashlib.sha256(downloaded).hexdigest()
    assert downloaded == installer

    ref = {"platform": "android", "channel": chan}
    paused = await client.post("/v1/updates/rollouts/pause", json=ref, headers=manager)
    assert paused.json()["state"] == "paused"
    assert (await _check(client, "android", chan, "1.6", inside))["status"] == "optional_update"
    back = await client.post("/v1/updates/rollouts/rollback", json=ref, headers=manager)
    assert back.json()["state"] == "rolled_back"
    assert (await _check(client, "android", chan, "1.6", inside))["status"] == "up_to_date"
    old = await _check(client, "android", chan, "0.9", inside)
    assert old["offered"]["version"] == "1.0.0"


async def _sessions(
    client: httpx.AsyncClient,
    token: httpx.Headers,
    platform: str,
    version: str,
    sessions: int,
    crashed: int,
) -> None:
    """Sessions of a candidate's app: only batches with a candidate's token count."""
    device = new_device()
    batch = []
    for s in range(sessions):
        session = f"{device}-{s}"  # sessions of one call, distinct from every other call's
        batch.append(record(device, os=platform, app_version=version, session=session))
        if s < crashed:
            batch.append(
                record(device, os=platform, app_version=version, session=session, kind="crash")
            )
    headers = {**token, "content-type": "application/x-ndjson"}
    response = await client.post("/v1/logs", content=ndjson(batch), headers=headers)
    assert response.status_code == 202, response.text


async def test_the_crash_gate_halts_a_rollout_and_checks_stop_offering_it(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    _, manager = await new_release_manager(client, runtime)
    chan = channel()
    major = 100 + secrets.randbelow(10**6)
    old, new = f"{major}.0.0", f"{major}.1.0"
    await publish(client, manager, "ios", chan, old)
    await seed_rollout(runtime, "ios", chan, old, previous=None, step=4, state="complete")
    await publish(client, manager, "ios", chan, new)
    gate = Gate(margin=0.1, min_sessions=10)
    await seed_rollout(runtime, "ios", chan, new, previous=old, step=4, gate=gate)  # 100%, active
    device = new_device()
    assert (await _check(client, "ios", chan, old, device))["status"] == "optional_update"
    # Reports come from candidates' apps (a later exam: no freeze window now).
    later = datetime.now(UTC) + timedelta(days=2)
    world = await new_exam(
        client,
        runtime,
        {"r1": ["6101"]},
        with_proctors=False,
        # Candidates who enrol their own face may log in any day before the start.
        candidate_enrolment=True,
        starts_at=later.isoformat(),
        ends_at=(later + timedelta(hours=2)).isoformat(),
    )
    token = await consenting_candidate(client, world.exam_id, "6101")

    # Crashing, but not enough sessions yet to judge.
    await _sessions(client, token, "ios", old, sessions=12, crashed=0)
    await _sessions(client, token, "ios", new, sessions=5, crashed=5)
    await runtime.updates.evaluate_gates()
    ref = {"platform": "ios", "channel": chan}
    state = await client.get("/v1/updates/rollouts", params=ref, headers=manager)
    assert state.json()["state"] == "active"

    await _sessions(client, token, "ios", new, sessions=8, crashed=2)  # 13 sessions, 7 crashed
    await runtime.updates.evaluate_gates()
    state = await client.get("/v1/updates/rollouts", params=ref, headers=manager)
    halted = state.json()
    assert halted["state"] == "halted"
    assert halted["halted"]["version"] == new
    assert halted["halted"]["crash_rate"] > halted["halted"]["previous_crash_rate"] + 0.1
    assert (await _check(client, "ios", chan, old, device))["status"] == "up_to_date"

    events: Any = await runtime.redis.xrevrange(keys.OPS_EVENTS, count=100)
    ours = [json.loads(f[b"e"]) for _, f in events if json.loads(f[b"e"]).get("version") == new]
    assert [e["kind"] for e in ours] == ["rollout_halted"]
    assert device not in json.dumps(ours)


async def test_no_step_advances_in_a_region_during_an_exam(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    # An exam on now in each region: every region is frozen.
    await new_exam(client, runtime, {"r1": ["6201"]}, region="cn-north", with_proctors=False)
    await new_exam(client, runtime, {"r1": ["6202"]}, region="cn-east", with_proctors=False)
    _, manager = await new_release_manager(client, runtime)
    chan = channel()
    await publish(client, manager, "windows", chan, "3.0.0")
    start = {"platform": "windows", "channel": chan, "version": "3.0.0"}
    refused = await client.post("/v1/updates/rollouts", json=start, headers=manager)
    assert refused.status_code == 409
    assert refused.json()["reason"] == "freeze_window"
    assert set(refused.json()["frozen"]) == {"cn-north", "cn-east"}
    ref = {"platform": "windows", "channel": chan}
    missing = await client.get("/v1/updates/rollouts", params=ref, headers=manager)
    assert missing.json()["reason"] == "rollout_not_found"  # nothing was stored

    await seed_rollout(runtime, "windows", chan, "3.0.0", previous=None, step=0)
    advance = await client.post("/v1/updates/rollouts/advance", json=ref, headers=manager)
    assert advance.json()["reason"] == "freeze_window"
    state = (await client.get("/v1/updates/rollouts", params=ref, headers=manager)).json()
    assert state["percent_by_region"] == {"cn-east": 1, "cn-north": 1}

    paused = await client.post("/v1/updates/rollouts/pause", json=ref, headers=manager)
    assert paused.json()["state"] == "paused"
    blocked = await client.post("/v1/updates/rollouts/advance", json=ref, headers=manager)
    assert blocked.json()["reason"] == "rollout_state"
    resumed = await client.post("/v1/updates/rollouts/resume", json=ref, headers=manager)
    assert resumed.json()["state"] == "active"
    anonymous = await client.post("/v1/updates/rollouts/advance", json=ref)
    assert anonymous.status_code == 401


def test_advancing_moves_only_regions_without_an_exam() -> None:
    rollout = Rollout(
        platform="android",
        channel="stable",
        version="2.0.0",
        previous="1.0.0",
        state="active",
        steps=(1, 5, 20, 50, 100),
        step_by_region={"cn-north": 0, "cn-east": 0},
        gate=Gate(margin=0.02, min_sessions=10),
    )
    moved = rollout.advance({"cn-north"}, "org")
    assert (moved.percent("cn-north"), moved.percent("cn-east")) == (1, 5)
    for _ in range(3):
        moved = moved.advance(set(), "org")
    assert (moved.percent("cn-north"), moved.percent("cn-east"), moved.state) == (50, 100, "active")
    done = moved.advance({"cn-east"}, "org")
    assert (done.percent("cn-north"), done.state) == (100, "complete")
    assert [h["action"] for h in done.history] == ["advance"] * 5
