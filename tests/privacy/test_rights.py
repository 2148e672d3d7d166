"""Data-subject rights and consent records: a copy, deletion, third-party sharing, exports."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.privacy.conftest import (
    ended_exam,
    image_bytes,
    image_headers,
    joined_before_the_end,
    runtime_of,
)
from tests.privacy.helpers import platform_data, versions
from tests.support.factories import joined_candidate, new_exam


async def test_a_candidate_downloads_a_copy_of_their_own_data(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001", "1002"]})
    me = await joined_candidate(client, world.exam_id, "1001")
    await joined_candidate(client, world.exam_id, "1002")
    await client.post("/v1/uploads/whiteboards", content=image_bytes(), headers=image_headers(me))
    copy = await client.get("/v1/me/data", headers=me)
    assert copy.status_code == 200, copy.text
    data = copy.json()
    cid = world.candidate_ids["1001"]
    assert data["candidate"] == cid
    assert [(c["kind"], c["value"]) for c in data["consents"]] == [("policy", "1")]
    assert {e["type"] for e in data["timeline"]} >= {"joined", "upload"}
    assert {e["cid"] for e in data["timeline"]} == {cid}  # nobody else's events
    assert [u["data_class"] for u in data["uploads"]] == ["whiteboards"]
    assert data["recordings"] == []
    assert data["third_party_sharing"] is False


async def test_third_party_sharing_is_off_until_given_and_consents_export(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(
        client, runtime, {"r1": ["1001", "2001"]}, born={"2001": "2014-03-01"}, policy_version="3"
    )
    me = await joined_candidate(client, world.exam_id, "1001", policy="3")
    assert (await client.get("/v1/me/consents", headers=me)).json()["third_party_sharing"] is False
    for allow in (True, False, True):
        given = await client.post("/v1/me/consents/third-party", json={"allow": allow}, headers=me)
        assert given.status_code == 204
    assert (await client.get("/v1/me/consents", headers=me)).json()["third_party_sharing"] is True
    bad = await client.post("/v1/me/consents/third-party", json={"allow": "maybe"}, headers=me)
    assert bad.status_code == 422
    minor = world.candidate_ids["2001"]
    guardian = await client.post(
        f"/v1/exams/{world.exam_id}/candidates/{minor}/guardian-consent",
        json={"reference": "GC-77"},
        headers=world.organiser,
    )
    assert guardian.status_code == 204

    export = await client.get(f"/v1/exams/{world.exam_id}/consents", headers=world.organiser)
    assert export.status_code == 200
    records = export.json()["records"]
    assert [(r["kind"], r["value"]) for r in records] == [
        ("policy", "3"),
        ("third_party", "granted:3"),
        ("third_party", "withdrawn:3"),
        ("third_party", "granted:3"),
        ("guardian", "recorded"),  # the reference itself stays sealed
    ]
    assert all(isinstance(r["at"], float) for r in records)
    # Proctors and other organisers do not get the consent records.
    assert (
        await client.get(f"/v1/exams/{world.exam_id}/consents", headers=world.proctors["r1"])
    ).status_code == 403
    other = await new_exam(client, runtime, {"r1": ["1001"]})
    assert (
        await client.get(f"/v1/exams/{world.exam_id}/consents", headers=other.organiser)
    ).status_code == 404


async def test_deletion_request_acts_on_the_caller_only(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await ended_exam(client, runtime, {"r1": ["1001", "1002"]}, retention=[])
    exam, mine, theirs = world.exam_id, world.candidate_ids["1001"], world.candidate_ids["1002"]
    for cid in (mine, theirs):
        await platform_data(runtime, exam, cid)
    me = await joined_before_the_end(client, runtime, exam, "1001")
    # Naming someone else in the body changes nothing: the route acts on the caller.
    asked = await client.post("/v1/me/deletion-request", json={"candidate": theirs}, headers=me)
    assert asked.status_code == 200, asked.text
    assert asked.json()["status"] == "done"
    assert asked.json()["receipts"]
    for data_class in ("recordings", "face", "evidence"):
        assert await versions(runtime, "cn-north", f"{exam}/{data_class}/{mine}/") == set()
        assert await versions(runtime, "cn-north", f"{exam}/{data_class}/{theirs}/") != set()
    # The exam has no retention rules: nothing else of the exam went.
    assert len(await versions(runtime, "cn-north", f"{exam}/logs/")) == 2
    receipts = (
        await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
    ).json()["entries"]
    assert receipts[0]["kind"] == "deletion_request"
    assert {e["body"]["clause"] for e in receipts[1:]} == {f"deletion request {asked.json()['id']}"}


async def test_a_deletion_request_before_the_exam_ends_is_scheduled(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    await platform_data(runtime, world.exam_id, world.candidate_ids["1001"])
    me = await joined_candidate(client, world.exam_id, "1001")
    asked = await client.post("/v1/me/deletion-request", headers=me)
    assert asked.status_code == 200
    assert asked.json()["status"] == "scheduled"
    run = await client.post(f"/v1/exams/{world.exam_id}/retention/runs", headers=world.organiser)
    assert run.json()["planned"] == 0
    assert len(await versions(runtime, "cn-north", f"{world.exam_id}/")) == 5
