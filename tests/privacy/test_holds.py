"""Legal holds keep data from every deletion until released; exports for authorities."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import httpx
from fastapi import FastAPI

from cluster.privacy_cli import purge
from core import keys
from tests.privacy.conftest import (
    ended_exam,
    image_bytes,
    image_headers,
    joined_before_the_end,
    runtime_of,
)
from tests.privacy.helpers import platform_data, versions


async def test_held_data_survives_the_sweep_and_goes_after_release(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001", "1002"]})
    exam, held, free = world.exam_id, world.candidate_ids["1001"], world.candidate_ids["1002"]
    for cid in (held, free):
        await platform_data(runtime, exam, cid)
    holds = f"/v1/exams/{exam}/holds"
    for body in (
        {"reference": "CASE-7", "candidate": held},
        {"reference": "CASE-7", "reason": "   ", "candidate": held},
        {"reason": "appeal", "candidate": held},
    ):
        refused = await client.post(holds, json=body, headers=world.organiser)
        assert refused.status_code == 422
        assert refused.json()["reason"] == "invalid_input"
    assert (await client.get(holds, headers=world.organiser)).json()["holds"] == []

    placed = await client.post(
        holds,
        json={"reference": "CASE-7", "reason": "appeal against the result", "candidate": held},
        headers=world.organiser,
    )
    assert placed.status_code == 201, placed.text
    assert placed.json()["pinned_objects"] == 4  # two recording versions, template, evidence
    # The store itself refuses: every held version carries an Object Lock legal hold.
    held_versions = await versions(runtime, "cn-north", f"{exam}/recordings/{held}/")
    for key, version in held_versions:
        assert not await runtime.regional.delete_version("cn-north", key, version)
    # Written after the hold: locked on arrival.
    late = await runtime.regional.put(exam, "evidence", held, "late.jpg", b"late")
    lock = await runtime.stores.call(
        "cn-north",
        "get_object_legal_hold",
        Bucket=runtime.stores.bucket("cn-north"),
        Key=late.key,
        VersionId=late.version_id,
    )
    assert lock["LegalHold"]["Status"] == "ON"

    headers = await joined_before_the_end(client, runtime, exam, "1001")
    asked = await client.post("/v1/me/deletion-request", headers=headers)
    assert asked.status_code == 409
    assert asked.json()["reason"] == "legal_hold"
    assert asked.json()["holds"] == [{"reference": "CASE-7", "reason": "appeal against the result"}]

    run = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert run.json()["failed_groups"] == []
    assert len(await versions(runtime, "cn-north", f"{exam}/recordings/{held}/")) == 2
    assert len(await versions(runtime, "cn-north", f"{exam}/evidence/{held}/")) == 2
    assert await versions(runtime, "cn-north", f"{exam}/recordings/{free}/") == set()
    assert await versions(runtime, "cn-north", f"{exam}/face/{free}/") == set()

    released = await client.delete(f"{holds}/{placed.json()['id']}", headers=world.organiser)
    assert released.status_code == 200
    run = await client.post(f"/v1/exams/{exam}/retention/runs", headers=world.organiser)
    assert run.json()["kept"] == 0
    assert await versions(runtime, "cn-north", f"{exam}/") == set()
    kinds = [
        e["kind"]
        for e in (
            await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
        ).json()["entries"]
    ]
    assert kinds.index("legal_hold_placed") < kinds.index("legal_hold_released")


async def test_an_exam_wide_hold_keeps_everything_even_from_a_purge(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001"]})
    await platform_data(runtime, world.exam_id, world.candidate_ids["1001"])
    before = await versions(runtime, "cn-north", f"{world.exam_id}/")
    placed = await client.post(
        f"/v1/exams/{world.exam_id}/holds",
        json={"reference": "LAW-1", "reason": "court order 12/2026"},
        headers=world.organiser,
    )
    assert placed.status_code == 201
    summary = await purge(runtime.settings, exam=world.exam_id, region=None)
    assert summary["planned"] == 0
    assert await versions(runtime, "cn-north", f"{world.exam_id}/") == before
    await client.delete(
        f"/v1/exams/{world.exam_id}/holds/{placed.json()['id']}", headers=world.organiser
    )
    summary = await purge(runtime.settings, exam=world.exam_id, region=None)
    assert summary["failed_groups"] == []
    assert await versions(runtime, "cn-north", f"{world.exam_id}/") == set()
    assert await runtime.redis.exists(keys.data_key_key(world.exam_id)) == 0


async def test_export_for_an_authority_has_a_manifest_and_is_audited(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001", "1002"]})
    exam, cid = world.exam_id, world.candidate_ids["1001"]
    me = await joined_before_the_end(client, runtime, exam, "1001")
    photo = image_bytes(seed=9)
    await client.post("/v1/uploads/photos", content=photo, headers=image_headers(me))
    await platform_data(runtime, exam, cid)
    await platform_data(runtime, exam, world.candidate_ids["1002"])
    body = {"reference": "POLICE-42", "reason": "request under the exam law", "candidate": cid}
    made = await client.post(f"/v1/exams/{exam}/exports", json=body, headers=world.organiser)
    assert made.status_code == 201, made.text
    archive = await client.get(made.json()["url"], headers=world.organiser)
    assert archive.status_code == 200
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as package:
        manifest = json.loads(package.read("manifest.json"))
        for entry in manifest["files"]:
            assert hashlib.sha256(package.read(entry["file"])).hexdigest() == entry["sha256"]
        objects = {e["key"].split("/", 2)[2]: e for e in manifest["files"] if "key" in e}
        photo_entry = next(e for e in manifest["files"] if e.get("data_class") == "photos")
        assert package.read(photo_entry["file"]) == photo  # opened for the authority
        timeline = package.read("timelines/r1.jsonl").decode()
    assert manifest["reference"] == "POLICE-42"
    assert all(key.split("/")[0] == cid for key in objects)  # only this candidate
    assert {e["data_class"] for e in objects.values()} == {
        "photos",
        "recordings",
        "face",
        "evidence",
    }
    assert '"joined"' in timeline
    assert world.candidate_ids["1002"] not in timeline
    # Stored sealed, in the exam's region, as class `exports`.
    stored = await versions(runtime, "cn-north", f"{exam}/exports/")
    assert len(stored) == 1
    entries = (
        await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
    ).json()["entries"]
    assert [e["kind"] for e in entries] == ["export", "export_downloaded"]
    assert entries[0]["body"]["reference"] == "POLICE-42"

    # Another organiser's exam, and a hold on it: 404, nothing made.
    other = await ended_exam(client, runtime, {"r9": ["9001"]})
    refused = await client.post(f"/v1/exams/{exam}/exports", json=body, headers=other.organiser)
    assert refused.status_code == 404
    assert (await client.get(made.json()["url"], headers=other.organiser)).status_code == 404
    hold = {"reference": "X", "reason": "y"}
    assert (
        await client.post(f"/v1/exams/{exam}/holds", json=hold, headers=other.organiser)
    ).status_code == 404
    assert len(await versions(runtime, "cn-north", f"{exam}/exports/")) == 1
