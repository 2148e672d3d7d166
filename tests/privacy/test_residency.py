"""Residency: every write of an exam's data lands in its region's bucket, and nowhere else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cluster.privacy_cli import purge, verify_regions
from core import keys
from infra.errors import ResidencyViolation
from tests.privacy.conftest import (
    bucket_versions,
    ended_exam,
    image_bytes,
    image_headers,
    joined_before_the_end,
    raw_object,
    runtime_of,
)
from tests.privacy.helpers import platform_data, versions

ROOT = Path(__file__).resolve().parents[2]
# Region-level writers that name their region explicitly and hold no exam's data:
# anonymous client logs (sent before login) and update installers; and the audit chain.
REGION_LEVEL_WRITERS = {"infra/regional.py", "infra/audit.py", "actors/ingest/sink.py"}


async def test_every_class_of_an_exam_lands_in_its_region_only(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    north = await ended_exam(client, runtime, {"r1": ["1001"]}, region="cn-north")
    east = await ended_exam(client, runtime, {"r1": ["1001"]}, region="cn-east")
    for world in (north, east):
        me = await joined_before_the_end(client, runtime, world.exam_id, "1001")
        for kind in ("photos", "whiteboards"):
            shared = await client.post(
                f"/v1/uploads/{kind}", content=image_bytes(), headers=image_headers(me)
            )
            assert shared.status_code == 201, shared.text
        await platform_data(runtime, world.exam_id, world.candidate_ids["1001"])
        made = await client.post(
            f"/v1/exams/{world.exam_id}/exports",
            json={"reference": "R-1", "reason": "audit of the platform"},
            headers=world.organiser,
        )
        assert made.status_code == 201, made.text
    classes = {"photos", "whiteboards", "recordings", "face", "evidence", "logs", "exports"}
    for world, home, away in ((north, "cn-north", "cn-east"), (east, "cn-east", "cn-north")):
        here = await bucket_versions(runtime.stores, home, f"{world.exam_id}/")
        assert {str(v["Key"]).split("/")[1] for v in here} == classes
        assert await bucket_versions(runtime.stores, away, f"{world.exam_id}/") == []

    # Receipts: each exam's deletion receipts are entries of its own region's chain.
    for world in (north, east):
        run = await client.post(
            f"/v1/exams/{world.exam_id}/retention/runs", headers=world.organiser
        )
        assert run.json()["receipts"], run.text
    for world, home, away in ((north, "cn-north", "cn-east"), (east, "cn-east", "cn-north")):
        [home_chain] = await verify_regions(runtime.settings, home)
        [away_chain] = await verify_regions(runtime.settings, away)
        assert home_chain.ok
        assert away_chain.ok
        kinds = {e["kind"] for e in home_chain.entries if e["exam"] == world.exam_id}
        assert kinds == {"export", "deletion"}
        assert [e for e in away_chain.entries if e["exam"] == world.exam_id] == []
        for entry in await bucket_versions(runtime.stores, away, "_audit/"):
            raw = await raw_object(runtime.stores, away, str(entry["Key"]))
            assert world.exam_id.encode() not in raw


async def test_a_forced_cross_region_write_fails_and_nothing_lands(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001"]}, region="cn-north")
    cid = world.candidate_ids["1001"]
    audit_before = await runtime.redis.xlen(keys.audit_events_key("cn-north"))
    with pytest.raises(ResidencyViolation):
        await runtime.regional.put(
            world.exam_id, "photos", cid, "forced.png", image_bytes(), target_region="cn-east"
        )
    for region in ("cn-north", "cn-east"):
        assert await versions(runtime, region, f"{world.exam_id}/") == set()
    events: Any = await runtime.redis.xrange(
        keys.audit_events_key("cn-north"), count=audit_before + 10
    )
    audited = [json.loads(fields[b"e"]) for _, fields in events]
    assert {"event": "residency_violation", "exam": world.exam_id, "target": "cn-east"} in [
        {k: v for k, v in e.items() if k != "at"} for e in audited
    ]


async def test_unknown_regions_are_refused(client: httpx.AsyncClient, app: FastAPI) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001"]})
    body = {
        "id": "exmars",
        "title": "x",
        "starts_at": "2030-01-01T08:00:00Z",
        "ends_at": "2030-01-01T10:00:00Z",
        "region": "mars-1",
    }
    refused = await client.post("/v1/exams", json=body, headers=world.organiser)
    assert (refused.status_code, refused.json()["reason"]) == (422, "unknown_region")
    assert await runtime.redis.get(keys.exam_key("exmars")) is None
    [report] = await verify_regions(runtime.settings, "mars-1")
    assert not report.ok
    assert (await purge(runtime.settings, exam=None, region="mars-1"))["error"]


def test_no_code_outside_the_regional_store_writes_objects() -> None:
    """Personal data reaches a bucket only through `RegionalStore`, which takes the exam."""
    writers = set()
    sources = ("actors/**/*.py", "api/**/*.py", "core/**/*.py", "infra/**/*.py")
    for path in [p for pattern in sources for p in ROOT.glob(pattern)]:
        source = path.read_text()
        if re.search(r"[\"']put_object[\"']|\.put_object\(|generate_presigned_url", source):
            writers.add(str(path.relative_to(ROOT)))
    # Update installers are uploaded by a presigned URL to the configured installer region.
    assert writers == REGION_LEVEL_WRITERS | {"actors/updates/installers.py"}
