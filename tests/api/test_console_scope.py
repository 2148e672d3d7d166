"""Issue #25 item 3: who a candidate is (name, number, enrolment photo) reaches the staff of
their room only (its proctor, the exam's chief proctor and organiser); a proctor of another
room and another exam's staff get 404, a candidate and an examiner 403. A room's summary
counts its people and its open help requests, which a proctor's answer settles."""

from __future__ import annotations

import io

import httpx
from fastapi import FastAPI
from PIL import Image

from api.runtime import Runtime
from core import keys
from tests.support.factories import (
    assigned_staff,
    candidate_login,
    enrol_face,
    joined_candidate,
    new_exam,
)


async def test_identity_reaches_the_rooms_staff_only(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime: Runtime = app.state.runtime
    world = await new_exam(
        client, runtime, {"r1": ["5101", "5103"], "r2": ["5102"]}, keep_enrolment_photo=True
    )
    other = await new_exam(client, runtime, {"r1": ["5201"]})
    cid, unenrolled = world.candidate_ids["5101"], world.candidate_ids["5103"]
    assert (await enrol_face(client, world, cid))["photo_kept"] is True
    _, chief = await assigned_staff(client, world, "chief-proctor")
    _, examiner = await assigned_staff(client, world, "examiner")
    _, other_chief = await assigned_staff(client, other, "chief-proctor")
    candidate = await candidate_login(client, world.exam_id, "5101")

    base = f"/v1/exams/{world.exam_id}/rooms/r1"
    urls = [f"{base}/roster", f"{base}/summary", f"{base}/candidates/{cid}/photo"]
    for url in urls:
        for who in (world.proctors["r1"], chief, world.organiser):
            allowed = await client.get(url, headers=who)
            assert allowed.status_code == 200, (url, allowed.text)
        for who in (world.proctors["r2"], other.proctors["r1"], other.organiser, other_chief):
            hidden = await client.get(url, headers=who)
            assert hidden.status_code == 404, url
            assert hidden.json()["reason"] in ("room_not_found", "exam_not_found"), url
        for who in (candidate, examiner):
            refused = await client.get(url, headers=who)
            assert (refused.status_code, refused.json()["reason"]) == (403, "staff_only"), url

    roster = (await client.get(f"{base}/roster", headers=world.proctors["r1"])).json()
    assert sorted(roster["candidates"], key=lambda c: c["candidate_no"]) == [
        {"cid": cid, "name": "Candidate 5101", "candidate_no": "5101", "has_photo": True},
        {"cid": unenrolled, "name": "Candidate 5103", "candidate_no": "5103", "has_photo": False},
    ]
    photo = await client.get(f"{base}/candidates/{cid}/photo", headers=chief)
    assert photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(photo.content)).size[0] > 0
    none = await client.get(f"{base}/candidates/{unenrolled}/photo", headers=chief)
    assert (none.status_code, none.json()["reason"]) == (404, "no_enrolment")
    # A candidate of the exam, asked for through a room that is not theirs.
    elsewhere = f"{base}/candidates/{world.candidate_ids['5102']}/photo"
    wrong_room = await client.get(elsewhere, headers=world.proctors["r1"])
    assert (wrong_room.status_code, wrong_room.json()["reason"]) == (404, "candidate_not_found")


async def test_the_summary_counts_people_and_open_help_until_a_proctor_answers(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime: Runtime = app.state.runtime
    world = await new_exam(client, runtime, {"r1": ["5301", "5302", "5303"]})
    joined = world.candidate_ids["5301"]
    await joined_candidate(client, world.exam_id, "5301")
    proctor, base = world.proctors["r1"], f"/v1/exams/{world.exam_id}/rooms/r1"
    # The help route journals this event; appended here as it does, into the real room.
    help_event = {"type": "help", "cid": joined, "kind": "message", "text": "缺页"}
    await runtime.rooms.append(keys.room_key(world.exam_id, "r1"), help_event)

    summary = (await client.get(f"{base}/summary", headers=proctor)).json()
    assert summary == {
        "room": "r1",
        "candidates": 3,
        "joined": 1,
        "absent": 2,
        "disconnected": 0,
        "left": 0,
        "ended": 0,
        "help": 1,
        "incidents": 0,
    }
    view = (await client.get(base, headers=proctor)).json()
    assert view["help"][joined]["text"] == "缺页"
    # The exam's overview, which the console's all-rooms step reads, counts the same.
    overview_url = f"/v1/exams/{world.exam_id}/overview"
    overview = (await client.get(overview_url, headers=world.organiser)).json()
    counts = {k: overview["rooms"][0][k] for k in ("present", "absent", "help", "incidents_open")}
    assert counts == {"present": 1, "absent": 2, "help": 1, "incidents_open": 0}

    answer = {"to": joined, "text": "马上来"}
    assert (await client.post(f"{base}/messages", json=answer, headers=proctor)).status_code == 201
    assert (await client.get(f"{base}/summary", headers=proctor)).json()["help"] == 0
    assert (await client.get(base, headers=proctor)).json()["help"] == {}
    overview = (await client.get(overview_url, headers=world.organiser)).json()
    assert (overview["rooms"][0]["help"], overview["totals"]["help"]) == (0, 0)
