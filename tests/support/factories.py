"""Builders of real data through the real API: staff of every role, exams, rosters, logged-in
candidates, exam-wide staff (chief proctors, examiners) and enrolled faces."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from api.runtime import Runtime
from infra.tokens import StaffRole

PASSWORD = "correct horse battery staple"
# A real face: the verifier accepts it as an enrolment photo.
FACE = (Path(__file__).resolve().parents[1] / "fixtures" / "faces" / "person_a_1.jpg").read_bytes()


@dataclass
class ExamWorld:
    exam_id: str
    region: str
    organiser: httpx.Headers
    rooms: dict[str, list[str]]  # room -> candidate numbers
    proctors: dict[str, httpx.Headers] = field(default_factory=dict)  # room -> proctor headers
    candidate_ids: dict[str, str] = field(default_factory=dict)  # candidate number -> cid


def auth(token: str) -> httpx.Headers:
    return httpx.Headers({"Authorization": f"Bearer {token}"})


async def staff_login(client: httpx.AsyncClient, username: str) -> httpx.Headers:
    response = await client.post(
        "/v1/staff/sessions", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    return auth(response.json()["token"])


async def new_staff(
    client: httpx.AsyncClient, runtime: Runtime, role: StaffRole, prefix: str
) -> tuple[str, httpx.Headers]:
    """A logged-in staff member of `role`, made as `examday staff add` makes one (no creator)."""
    username = f"{prefix}-{secrets.token_hex(4)}"
    await runtime.staff.create(username, PASSWORD, role, None)
    return username, await staff_login(client, username)


async def new_organiser(client: httpx.AsyncClient, runtime: Runtime) -> tuple[str, httpx.Headers]:
    return await new_staff(client, runtime, "organiser", "org")


async def new_admin(client: httpx.AsyncClient, runtime: Runtime) -> tuple[str, httpx.Headers]:
    return await new_staff(client, runtime, "admin", "adm")


async def new_release_manager(
    client: httpx.AsyncClient, runtime: Runtime
) -> tuple[str, httpx.Headers]:
    return await new_staff(client, runtime, "release-manager", "rel")


def roster_csv(exam_id: str, rooms: dict[str, list[str]], **born: str) -> str:
    lines = ["exam_no,candidate_no,name,date_of_birth,room,guardian_consent"]
    for room, numbers in rooms.items():
        for number in numbers:
            dob = born.get(number, "2000-01-01")
            lines.append(f"{exam_id},{number},Candidate {number},{dob},{room},")
    return "\n".join(lines) + "\n"


async def new_exam(
    client: httpx.AsyncClient,
    runtime: Runtime,
    rooms: dict[str, list[str]],
    *,
    region: str = "cn-north",
    with_proctors: bool = True,
    **exam: Any,
) -> ExamWorld:
    born: dict[str, str] = exam.pop("born", {})
    _, organiser = await new_organiser(client, runtime)
    exam_id = f"ex{secrets.token_hex(5)}"
    now = datetime.now(UTC)
    body = {
        "id": exam_id,
        "title": "Mathematics",
        "starts_at": (now - timedelta(minutes=5)).isoformat(),
        "ends_at": (now + timedelta(hours=2)).isoformat(),
        "region": region,
        **exam,
    }
    response = await client.post("/v1/exams", json=body, headers=organiser)
    assert response.status_code == 201, response.text
    response = await client.post(
        f"/v1/exams/{exam_id}/roster",
        content=roster_csv(exam_id, rooms, **born),
        headers={**organiser, "content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    world = ExamWorld(exam_id, region, organiser, rooms)
    for room, numbers in rooms.items():
        for number in numbers:
            world.candidate_ids[number] = runtime.exams.candidate_id(exam_id, number)
        if with_proctors:
            username = f"pro-{secrets.token_hex(4)}"
            created = await client.post(
                "/v1/staff",
                json={"username": username, "password": PASSWORD, "role": "proctor"},
                headers=organiser,
            )
            assert created.status_code == 201, created.text
            assigned = await client.put(
                f"/v1/exams/{exam_id}/rooms/{room}/proctors/{username}", headers=organiser
            )
            assert assigned.status_code == 204, assigned.text
            world.proctors[room] = await staff_login(client, username)
    return world


async def candidate_login(client: httpx.AsyncClient, exam_id: str, number: str) -> httpx.Headers:
    response = await client.post("/v1/sessions", json={"exam_no": exam_id, "candidate_no": number})
    assert response.status_code == 201, response.text
    return auth(response.json()["token"])


async def consenting_candidate(
    client: httpx.AsyncClient, exam_id: str, number: str, policy: str = "1"
) -> httpx.Headers:
    """A logged-in candidate who accepted the policy and the separate biometric consent: who
    may enrol a face, verify and upload (issue #26's gates)."""
    headers = await candidate_login(client, exam_id, number)
    consent = await client.post("/v1/me/consent", json={"policy_version": policy}, headers=headers)
    assert consent.status_code == 204, consent.text
    biometric = await client.post(
        "/v1/me/consents/biometric", json={"allow": True}, headers=headers
    )
    assert biometric.is_success, biometric.text
    return headers


async def joined_candidate(
    client: httpx.AsyncClient, exam_id: str, number: str, policy: str = "1"
) -> httpx.Headers:
    headers = await candidate_login(client, exam_id, number)
    consent = await client.post("/v1/me/consent", json={"policy_version": policy}, headers=headers)
    assert consent.status_code == 204, consent.text
    joined = await client.post("/v1/me/join", json={"network": "wifi"}, headers=headers)
    assert joined.status_code == 200, joined.text
    return headers


async def assigned_staff(
    client: httpx.AsyncClient, world: ExamWorld, role: StaffRole
) -> tuple[str, httpx.Headers]:
    """A logged-in chief proctor or examiner, made by the exam's organiser and assigned to the
    whole exam (`PUT /v1/exams/{e}/staff/{u}`)."""
    username = f"{role[:5]}-{secrets.token_hex(4)}"
    body = {"username": username, "password": PASSWORD, "role": role}
    created = await client.post("/v1/staff", json=body, headers=world.organiser)
    assert created.status_code == 201, created.text
    assigned = await client.put(
        f"/v1/exams/{world.exam_id}/staff/{username}", headers=world.organiser
    )
    assert assigned.status_code == 204, assigned.text
    return username, await staff_login(client, username)


@dataclass
class Reviewers:
    examiner_name: str
    examiner: httpx.Headers
    chief_name: str
    chief: httpx.Headers


async def assigned_reviewers(client: httpx.AsyncClient, world: ExamWorld) -> Reviewers:
    """The exam's reviewers: an examiner and a chief proctor (`assigned_staff`)."""
    examiner_name, examiner = await assigned_staff(client, world, "examiner")
    chief_name, chief = await assigned_staff(client, world, "chief-proctor")
    return Reviewers(examiner_name, examiner, chief_name, chief)


async def enrol_face(
    client: httpx.AsyncClient, world: ExamWorld, cid: str, photo: bytes = FACE
) -> dict[str, Any]:
    """The organiser enrols the candidate's face; the answer (whether the photo was kept)."""
    enrolled = await client.put(
        f"/v1/exams/{world.exam_id}/candidates/{cid}/face",
        content=photo,
        headers={**world.organiser, "content-type": "image/jpeg"},
    )
    assert enrolled.status_code == 200, enrolled.text
    answer: dict[str, Any] = enrolled.json()
    return answer
