"""Retention: due data goes, every version of it, with receipts in a verifiable audit chain."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
from fastapi import FastAPI

from cluster.privacy_cli import verify_regions
from core import keys
from infra.audit import object_key
from infra.settings import Settings, settings_to_env
from tests.privacy.conftest import (
    ended_exam,
    image_bytes,
    image_headers,
    joined_before_the_end,
    raw_object,
    runtime_of,
    short_policy,
)
from tests.privacy.helpers import delete_marker, platform_data, receipted, versions
from tests.support.factories import joined_candidate, new_exam


async def test_due_data_goes_with_every_version_and_a_receipt(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001", "1002"]})
    exam, cid = world.exam_id, world.candidate_ids["1001"]
    me = await joined_before_the_end(client, runtime, exam, "1001")
    shared = await client.post(
        "/v1/uploads/photos", content=image_bytes(), headers=image_headers(me)
    )
    assert shared.status_code == 201, shared.text
    stored = await platform_data(runtime, exam, cid)
    await delete_marker(runtime, exam, stored[0].key)
    before = await versions(runtime, "cn-north", f"{exam}/")
    assert len(before) == 7  # 2 recordings + a delete marker, template, evidence, log, photo
    assert await runtime.redis.exists(keys.room_events_key(f"{exam}/r1"))

    run = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert run.status_code == 200, run.text
    assert run.json()["failed_groups"] == []
    assert run.json()["kept"] == 0
    assert await versions(runtime, "cn-north", f"{exam}/") == set()
    assert not await runtime.redis.exists(keys.room_events_key(f"{exam}/r1"))
    # The candidate's Redis records of deleted classes went too.
    listed = await client.get(f"/v1/exams/{exam}/rooms/r1/uploads", headers=world.proctors["r1"])
    assert listed.json()["uploads"] == []

    entries = (
        await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
    ).json()["entries"]
    names = receipted(entries)
    assert sorted(names) == sorted(before)  # each version once, none twice
    receipt = next(e for e in entries if e["body"]["data_class"] == "recordings")
    assert receipt["body"]["clause"].startswith("retention[0]: recordings exam_end")
    assert receipt["body"]["verified_gone"] is True
    assert {o["size"] for o in receipt["body"]["objects"]} >= {len(b"second take")}
    timeline = next(e for e in entries if e["body"]["data_class"] == "timelines")
    assert keys.room_events_key(f"{exam}/r1") in timeline["body"]["redis_keys"]

    # A second run finds nothing more and receipts nothing twice.
    again = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert again.json()["planned"] == 0
    assert again.json()["receipts"] == []
    assert [r.ok for r in await verify_regions(settings, "cn-north")] == [True]


async def test_audit_verify_fails_on_one_tampered_byte(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001"]})
    await platform_data(runtime, world.exam_id, world.candidate_ids["1001"])
    run = await client.post(f"/v1/exams/{world.exam_id}/retention/runs", headers=world.organiser)
    seq = run.json()["receipts"][0]
    key = object_key(seq)
    original = await raw_object(runtime.stores, "cn-north", key)
    position = original.index(b'"size": ') + len(b'"size": ')
    tampered = original[:position] + bytes([original[position] ^ 0x01]) + original[position + 1 :]
    env = {**os.environ, **settings_to_env(settings)}
    command = [sys.executable, "-m", "cluster.cli", "audit", "verify", "--region", "cn-north"]
    clean = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    bucket = runtime.stores.bucket("cn-north")
    written = await runtime.stores.call(
        "cn-north", "put_object", Bucket=bucket, Key=key, Body=tampered
    )
    try:
        [report] = await verify_regions(settings, "cn-north")
        assert f"entry {seq} does not match its hash" in report.problems
        failed = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True
        )
        assert failed.returncode == 1
        assert "does not match its hash" in failed.stdout
    finally:
        # The locked original stays; the (unlocked) rewrite on top of it may go again.
        version = written["VersionId"]
        await runtime.stores.call(
            "cn-north", "delete_object", Bucket=bucket, Key=key, VersionId=version
        )
    assert [r.ok for r in await verify_regions(settings, "cn-north")] == [True]


async def test_candidate_exit_starts_the_clock_for_that_candidate_only(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(
        client,
        runtime,
        {"r1": ["1001", "1002"]},
        retention=[
            {"data_class": "recordings", "trigger": "candidate_exit", "after_seconds": 1},
            *[p for p in short_policy(86400) if p["data_class"] != "recordings"],
        ],
    )
    exam = world.exam_id
    leaving = await joined_candidate(client, exam, "1001")
    await joined_candidate(client, exam, "1002")
    for number in ("1001", "1002"):
        await platform_data(runtime, exam, world.candidate_ids[number])
    assert (await client.delete("/v1/sessions/current", headers=leaving)).status_code == 204
    await asyncio.sleep(1.2)  # the policy's one second after the exit
    run = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert run.json()["failed_groups"] == []
    gone, staying = world.candidate_ids["1001"], world.candidate_ids["1002"]
    assert await versions(runtime, "cn-north", f"{exam}/recordings/{gone}/") == set()
    assert len(await versions(runtime, "cn-north", f"{exam}/recordings/{staying}/")) == 2
    assert len(await versions(runtime, "cn-north", f"{exam}/face/{gone}/")) == 1
    # The room's timeline waits for the room: one candidate is still in it.
    assert await runtime.redis.exists(keys.room_events_key(f"{exam}/r1"))


async def test_a_readmitted_candidate_is_not_swept_as_gone(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(
        client,
        runtime,
        {"r1": ["1001"]},
        retention=[
            {"data_class": "recordings", "trigger": "candidate_exit", "after_seconds": 1},
            *[p for p in short_policy(86400) if p["data_class"] != "recordings"],
        ],
    )
    exam, cid = world.exam_id, world.candidate_ids["1001"]
    await joined_candidate(client, exam, "1001")
    await platform_data(runtime, exam, cid)
    candidate_url = f"/v1/exams/{exam}/rooms/r1/candidates/{cid}"
    for action in ("end", "readmit"):
        done = await client.post(f"{candidate_url}/{action}", headers=world.proctors["r1"])
        assert done.status_code == 201, done.text
    await asyncio.sleep(1.2)  # past the policy's second after the end
    run = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert run.json()["failed_groups"] == []
    # Readmitted, not yet back: may rejoin at any moment, and is not gone.
    assert len(await versions(runtime, "cn-north", f"{exam}/recordings/{cid}/")) == 2


async def test_policies_without_a_duration_or_with_a_negative_one_are_refused(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    for rule in (
        {"data_class": "photos", "trigger": "exam_end", "after_seconds": -1},
        {"data_class": "photos", "trigger": "exam_end"},
        {"data_class": "photos", "trigger": "fixed_date", "after_seconds": 0},
    ):
        body = {
            "id": "exbadpolicy",
            "title": "x",
            "starts_at": "2030-01-01T08:00:00Z",
            "ends_at": "2030-01-01T10:00:00Z",
            "region": "cn-north",
            "retention": [rule],
        }
        response = await client.post("/v1/exams", json=body, headers=world.organiser)
        assert response.status_code == 422
        assert response.json()["reason"] == "invalid_input"
    assert await runtime.redis.get(keys.exam_key("exbadpolicy")) is None
