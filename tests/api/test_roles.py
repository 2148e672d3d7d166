"""Issue #22, finding 4: each staff role reaches only what its work needs.

Admins make the staff accounts that carry power (organisers, admins, release managers),
release managers alone publish installers and move rollouts, organisers act on their
own exams only, and a legal hold is released by the organiser who placed it or an admin.
Every refusal stores nothing.
"""

from __future__ import annotations

import secrets

import httpx
from fastapi import FastAPI

from core import keys
from tests.accounts.test_login import runtime_of
from tests.support.factories import (
    PASSWORD,
    new_admin,
    new_exam,
    new_organiser,
    new_release_manager,
    staff_login,
)
from tests.updates.helpers import channel, publish


def _account(role: str) -> dict[str, str]:
    return {"username": f"new-{secrets.token_hex(4)}", "password": PASSWORD, "role": role}


async def test_only_an_admin_creates_organisers_admins_and_release_managers(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    _, admin = await new_admin(client, runtime)
    _, releaser = await new_release_manager(client, runtime)
    for role in ("organiser", "admin", "release-manager"):
        body = _account(role)
        refused = await client.post("/v1/staff", json=body, headers=world.organiser)
        assert refused.status_code == 403, refused.text
        assert refused.json()["reason"] == "admins_only"
        assert await runtime.staff.role(body["username"]) is None
    for caller in (world.proctors["r1"], releaser):
        body = _account("proctor")
        refused = await client.post("/v1/staff", json=body, headers=caller)
        assert refused.status_code == 403, refused.text
        assert await runtime.staff.role(body["username"]) is None
    # An organiser still makes the proctors of their rooms.
    proctor = _account("proctor")
    assert (await client.post("/v1/staff", json=proctor, headers=world.organiser)).is_success

    for role in ("organiser", "admin", "release-manager", "proctor"):
        body = _account(role)
        created = await client.post("/v1/staff", json=body, headers=admin)
        assert created.status_code == 201, created.text
        me = await client.get("/v1/staff/me", headers=await staff_login(client, body["username"]))
        assert me.status_code == 200, me.text
        assert (me.json()["username"], me.json()["role"]) == (body["username"], role)


async def test_releases_and_rollouts_are_for_release_managers(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    _, admin = await new_admin(client, runtime)
    _, releaser = await new_release_manager(client, runtime)
    chan = channel()
    ref = {"platform": "windows", "channel": chan}
    release = {
        **ref,
        "version": "9.0.0",
        "installer": {"filename": "examday.bin", "size": 10, "sha256": "ab" * 32},
    }
    calls = [
        ("POST", "/v1/updates/releases", release, None),
        ("POST", "/v1/updates/releases/verify", {**ref, "version": "9.0.0"}, None),
        ("GET", "/v1/updates/releases", None, ref),
        ("POST", "/v1/updates/rollouts", {**ref, "version": "9.0.0"}, None),
        ("GET", "/v1/updates/rollouts", None, ref),
        *(("POST", f"/v1/updates/rollouts/{act}", ref, None) for act in ("advance", "pause")),
        *(("POST", f"/v1/updates/rollouts/{act}", ref, None) for act in ("resume", "rollback")),
    ]
    for caller in (world.organiser, admin, world.proctors["r1"]):
        for method, path, body, params in calls:
            refused = await client.request(method, path, json=body, params=params, headers=caller)
            assert refused.status_code == 403, f"{method} {path}: {refused.text}"
            assert refused.json()["reason"] == "release_managers_only"
    # Nothing was stored, and the release manager does publish.
    listed = await client.get("/v1/updates/releases", params=ref, headers=releaser)
    assert listed.status_code == 200, listed.text
    assert listed.json()["releases"] == []
    published = await publish(client, releaser, "windows", chan, "9.0.1")
    assert published["version"] == "9.0.1"


async def test_an_organiser_cannot_act_on_another_organisers_exam(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    theirs = await new_exam(client, runtime, {"r1": ["1001"]})
    mine = await new_exam(client, runtime, {"r1": ["2001"]})
    exam, cid = theirs.exam_id, theirs.candidate_ids["1001"]
    hold = {"reference": "CASE-1", "reason": "appeal", "candidate": cid}
    proctor = _account("proctor")
    assert (await client.post("/v1/staff", json=proctor, headers=mine.organiser)).is_success
    calls = [
        ("GET", f"/v1/exams/{exam}", None),
        ("GET", f"/v1/exams/{exam}/rooms", None),
        ("GET", f"/v1/exams/{exam}/rooms/r1", None),
        ("PUT", f"/v1/exams/{exam}/rooms/r1/proctors/{proctor['username']}", None),
        ("POST", f"/v1/exams/{exam}/holds", hold),
        ("GET", f"/v1/exams/{exam}/holds", None),
        ("POST", f"/v1/exams/{exam}/exports", hold),
        ("GET", f"/v1/exams/{exam}/consents", None),
        ("POST", f"/v1/exams/{exam}/rooms/r1/messages", {"text": "stop"}),
        ("POST", f"/v1/exams/{exam}/rooms/r1/candidates/{cid}/end", None),
    ]
    for method, path, body in calls:
        refused = await client.request(method, path, json=body, headers=mine.organiser)
        assert refused.status_code == 404, f"{method} {path}: {refused.text}"
        assert refused.json()["reason"] in ("exam_not_found", "room_not_found")
    # Nothing happened to their exam.
    assert await runtime.redis.hlen(keys.privacy_holds_key(exam)) == 0
    assert await runtime.exams.proctor_rooms(proctor["username"]) == []
    theirs_now = await client.get(f"/v1/exams/{exam}/holds", headers=theirs.organiser)
    assert theirs_now.json()["holds"] == []


async def test_a_hold_is_released_by_its_placer_or_an_admin(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    other = await new_exam(client, runtime, {"r1": ["2001"]})
    _, admin = await new_admin(client, runtime)
    # A second organiser of the same exam: the registry's set is what admits one.
    co_name, co = await new_organiser(client, runtime)
    await runtime.redis.sadd(keys.staff_exams_key(co_name), world.exam_id)
    holds = f"/v1/exams/{world.exam_id}/holds"
    body = {"reference": "CASE-9", "reason": "appeal against the result"}
    placed = await client.post(holds, json=body, headers=world.organiser)
    assert placed.status_code == 201, placed.text
    hold_id = placed.json()["id"]
    first = await client.post(holds, json=body, headers=co)
    assert first.status_code == 201, first.text

    refusals = [
        (co, holds, 403, "not_hold_placer"),
        (world.proctors["r1"], holds, 403, "organisers_or_admins_only"),
        (other.organiser, holds, 404, "exam_not_found"),
        (admin, f"/v1/exams/ex{secrets.token_hex(5)}/holds", 404, "exam_not_found"),
    ]
    for caller, path, status, reason in refusals:
        refused = await client.delete(f"{path}/{hold_id}", headers=caller)
        assert refused.status_code == status, refused.text
        assert refused.json()["reason"] == reason
    standing = await client.get(holds, headers=world.organiser)
    assert {h["id"] for h in standing.json()["holds"]} == {hold_id, first.json()["id"]}

    # An admin lists and releases any organiser's hold; the placer releases their own.
    listed = await client.get(holds, headers=admin)
    assert listed.status_code == 200, listed.text
    assert {h["placed_by"] for h in listed.json()["holds"]} == {
        placed.json()["placed_by"],
        co_name,
    }
    released = await client.delete(f"{holds}/{hold_id}", headers=admin)
    assert released.status_code == 200, released.text
    assert released.json()["released"] is True
    own = await client.delete(f"{holds}/{first.json()['id']}", headers=co)
    assert own.status_code == 200, own.text
    assert (await client.get(holds, headers=world.organiser)).json()["holds"] == []


async def test_chief_proctors_and_examiners_reach_the_exams_assigned_to_them(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Issue #25 (chief proctor, all rooms) and #26 (examiner): an organiser creates them and
    assigns them to one exam; a chief proctor works every room of it and no other exam; an
    examiner reaches no live room at all."""
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"], "r2": ["1002"]})
    other = await new_exam(client, runtime, {"r1": ["2001"]})
    accounts = {role: _account(role) for role in ("chief-proctor", "examiner")}
    for body in accounts.values():
        created = await client.post("/v1/staff", json=body, headers=world.organiser)
        assert created.status_code == 201, created.text
    chief = await staff_login(client, accounts["chief-proctor"]["username"])
    examiner = await staff_login(client, accounts["examiner"]["username"])
    rooms_of = f"/v1/exams/{world.exam_id}/rooms"
    assert (await client.get(rooms_of, headers=chief)).status_code == 404

    # A proctor's account is assigned to rooms, never to a whole exam.
    proctor_name = (await client.get("/v1/staff/me", headers=world.proctors["r1"])).json()
    wrong = await client.put(
        f"/v1/exams/{world.exam_id}/staff/{proctor_name['username']}", headers=world.organiser
    )
    assert (wrong.status_code, wrong.json()["reason"]) == (404, "staff_not_found")
    # Another exam's organiser cannot assign anyone to this exam.
    for body in accounts.values():
        url = f"/v1/exams/{world.exam_id}/staff/{body['username']}"
        assert (await client.put(url, headers=other.organiser)).status_code == 404
        assert (await client.put(url, headers=world.organiser)).status_code == 204
    listed = await client.get(f"/v1/exams/{world.exam_id}/staff", headers=world.organiser)
    assert listed.json() == {
        "chief-proctor": [accounts["chief-proctor"]["username"]],
        "examiner": [accounts["examiner"]["username"]],
    }

    rooms = await client.get(rooms_of, headers=chief)
    assert rooms.status_code == 200
    assert set(rooms.json()["rooms"]) == {"r1", "r2"}
    for room in ("r1", "r2"):
        url = f"/v1/exams/{world.exam_id}/rooms/{room}"
        assert (await client.get(url, headers=chief)).status_code == 200
        refused = await client.get(url, headers=examiner)
        assert (refused.status_code, refused.json()["reason"]) == (403, "staff_only")
    other_room = await client.get(f"/v1/exams/{other.exam_id}/rooms/r1", headers=chief)
    assert other_room.status_code == 404
    me = await client.get("/v1/staff/me", headers=examiner)
    assert me.json()["exams"] == [world.exam_id]

    removed = f"/v1/exams/{world.exam_id}/staff/{accounts['chief-proctor']['username']}"
    assert (await client.delete(removed, headers=world.organiser)).status_code == 204
    assert (await client.get(rooms_of, headers=chief)).status_code == 404
    again = await client.delete(removed, headers=world.organiser)
    assert (again.status_code, again.json()["reason"]) == (404, "staff_not_found")
