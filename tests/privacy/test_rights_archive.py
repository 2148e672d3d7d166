"""The data archive holds what it says; corrections are answered; withdrawal ends the exam."""

from __future__ import annotations

import io
import json
import time
import zipfile
from typing import Any

import httpx
from fastapi import FastAPI

from actors.media.segment_store import Segment
from tests.ingest.helpers import ndjson, new_device, record
from tests.privacy.conftest import image_bytes, image_headers, runtime_of
from tests.support.factories import joined_candidate, new_exam


async def test_the_archive_holds_each_part_and_corrections_and_withdrawal_work(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001", "1002"]})
    exam, cid = world.exam_id, world.candidate_ids["1001"]
    me = await joined_candidate(client, exam, "1001")
    neighbour = await joined_candidate(client, exam, "1002")
    # Logs of the candidate's own device, and of the neighbour's, whose id the candidate
    # could learn: only their own device's go in their copy.
    mine, theirs = new_device(), new_device()
    for device, headers in ((mine, me), (theirs, neighbour)):
        sent = await client.post(
            "/v1/logs",
            content=ndjson([record(device, message=f"opened on {device}")]),
            headers={"content-type": "application/x-ndjson", **headers},
        )
        assert sent.status_code == 202, sent.text
    await runtime.ingest.drain()
    shared = await client.post(
        "/v1/uploads/whiteboards", content=image_bytes(), headers=image_headers(me)
    )
    assert shared.status_code == 201
    # One recorded segment, stored and indexed as the media shard does.
    media = b"\x1a\x45\xdf\xa3" + b"webm" * 1000
    stored = await runtime.regional.put(exam, "recordings", cid, "a" * 32 + "-00001.webm", media)
    now = time.time()
    segment = Segment(
        name="a" * 32 + "-00001.webm",
        key=stored.key,
        version_id=stored.version_id,
        region="cn-north",
        room="r1",
        session="a" * 32,
        source="camera",
        segment=1,
        start=now - 10,
        end=now,
        frames=100,
        audio_frames=0,
        byte_size=len(media),
        codec="vp8",
        container="webm",
    )
    await runtime.media.recordings.add(exam, cid, segment)

    answer = await client.get("/v1/me/archive", headers=me)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert "attachment" in answer.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(answer.content))

    def part(name: str) -> Any:
        return json.loads(archive.read(name))

    identity = part("identity.json")
    assert (identity["name"], identity["candidate_no"]) == ("Candidate 1001", "1001")
    assert identity["date_of_birth"] == "2000-01-01"
    assert [(c["kind"], c["value"]) for c in part("consents.json")] == [("policy", "1")]
    timeline = part("timeline.json")
    assert {e["type"] for e in timeline} >= {"joined", "upload"}
    assert {e["cid"] for e in timeline} == {cid}  # nobody else's events
    [upload] = part("uploads.json")
    kept = await runtime.regional.get(
        exam, (await runtime.privacy.candidate_uploads(exam, cid))[0]["key"]
    )
    assert archive.read(f"uploads/{upload['id']}.png") == kept
    face = part("face.json")
    assert face["enrolled"] is False
    assert "template" not in json.dumps(face)
    assert archive.read(f"recordings/{segment.name}") == media
    assert [r["name"] for r in part("recordings.json")] == [segment.name]
    [log] = part("logs.json")
    assert log["device"] == runtime.ingest.pseudonyms.device(mine)
    # Naming the neighbour's device changes nothing: the copy never takes a device id.
    named = await client.get("/v1/me/archive", params={"device_id": theirs}, headers=me)
    assert named.status_code in (200, 429), named.text
    if named.status_code == 200:
        other_copy = zipfile.ZipFile(io.BytesIO(named.content))
        assert [r["device"] for r in json.loads(other_copy.read("logs.json"))] == [log["device"]]
    manifest = part("manifest.json")
    assert manifest["candidate"] == cid
    assert manifest["left_out"] == []
    listed = {f["file"] for f in manifest["files"]}
    assert set(archive.namelist()) - {"manifest.json"} == listed

    # A correction: the candidate files it, the organiser answers it once, both see it.
    refused = await client.post(
        "/v1/me/requests", json={"kind": "correction", "text": "no field"}, headers=me
    )
    assert refused.json()["reason"] == "field_required"
    filed = await client.post(
        "/v1/me/requests",
        json={"kind": "correction", "field": "name", "text": "My name is Candidate 1001-A"},
        headers=me,
    )
    assert filed.status_code == 201, filed.text
    request_id = filed.json()["id"]
    listed_by_organiser = await client.get(f"/v1/exams/{exam}/requests", headers=world.organiser)
    [seen] = listed_by_organiser.json()["requests"]
    assert (seen["id"], seen["text"], seen["status"]) == (
        request_id,
        "My name is Candidate 1001-A",
        "open",
    )
    body = {"status": "done", "answer": "Corrected in the roster"}
    path = f"/v1/exams/{exam}/requests/{request_id}"
    assert (await client.post(path, json=body, headers=world.proctors["r1"])).status_code == 403
    other = await new_exam(client, runtime, {"r1": ["1001"]}, with_proctors=False)
    assert (await client.post(path, json=body, headers=other.organiser)).status_code == 404
    answered = await client.post(path, json=body, headers=world.organiser)
    assert answered.status_code == 200, answered.text
    again = await client.post(path, json=body, headers=world.organiser)
    assert again.json()["reason"] == "request_answered"
    [mine] = (await client.get("/v1/me/requests", headers=me)).json()["requests"]
    assert (mine["status"], mine["answer"]) == ("done", "Corrected in the roster")
    entries = (
        await client.get(f"/v1/exams/{exam}/retention/receipts", headers=world.organiser)
    ).json()["entries"]
    assert [e["kind"] for e in entries if e["kind"].startswith("rights_")] == [
        "rights_request",
        "rights_answer",
    ]
    assert "Corrected" not in json.dumps(entries)  # the text stays sealed in its class

    contact = (await client.get("/v1/privacy/contact")).json()
    assert contact["contact"]
    assert contact["operator"]["zh-CN"]
    assert contact["effective_date"]

    # Withdrawal from the exam: the session ends, the room sees it, no join again.
    withdrawn = await client.post("/v1/me/withdrawal", headers=me)
    assert withdrawn.status_code == 200, withdrawn.text
    assert (await client.get("/v1/me", headers=me)).status_code == 401
    back = await client.post("/v1/sessions", json={"exam_no": exam, "candidate_no": "1001"})
    headers = httpx.Headers({"authorization": f"Bearer {back.json()['token']}"})
    join = await client.post("/v1/me/join", json={"network": "wifi"}, headers=headers)
    assert (join.status_code, join.json()["reason"]) == (403, "withdrawn")
