"""The exam a fleet rehearses, set up through the public API, and the media it sends.

An organiser's credentials (the demo makes one) create the exam, its roster of
N candidates in rooms, and one proctor account per room. The exam has started
when the fleet arrives (joining and publishing wait for the start, and self-enrolment
closes at it), so the organiser enrols the media candidates' faces at set-up, as an
exam that enrols its candidates itself does. Candidates with media show real faces:
person A is enrolled and verifies with two different photos of the same person, and a
scheduled switch to person B provokes an `identity_mismatch` incident.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import numpy as np
import numpy.typing as npt

from loadtests import webrtc

FACES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "faces"
ROOM_SIZE = 30


@dataclass
class Scenario:
    exam_id: str
    hosts: tuple[str, ...]
    rooms: dict[str, list[str]]  # room -> candidate numbers
    proctors: dict[str, tuple[str, str]] = field(default_factory=dict)  # room -> (user, password)


@dataclass
class Assets:
    clips: webrtc.Clips
    enrol_jpeg: bytes
    live_jpeg: bytes
    photo_jpeg: bytes
    liveness: dict[str, list[bytes]]
    other_jpeg: bytes = b""  # another person (B): a `face_fail` candidate shows it


def _jpeg(image: npt.NDArray[np.uint8], quality: int = 85) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def build_assets(faces_dir: Path = FACES, *, liveness: bool = True) -> Assets:
    """Camera clips of faces, photos for enrolment and verification, liveness sequences."""
    faces = {
        "a": webrtc.load_face(faces_dir / "person_a_1.jpg"),
        "b": webrtc.load_face(faces_dir / "person_b_1.jpg"),
    }
    enrol = (faces_dir / "person_a_1.jpg").read_bytes()
    live = (faces_dir / "person_a_2.jpg").read_bytes()
    return Assets(
        clips=webrtc.encode_clips(faces),
        enrol_jpeg=enrol,
        live_jpeg=live,
        photo_jpeg=_jpeg(np.full((480, 640, 3), 235, dtype=np.uint8)),  # a blank answer sheet
        liveness=_liveness_sequences(faces_dir) if liveness else {},
        other_jpeg=(faces_dir / "person_b_1.jpg").read_bytes(),
    )


def _liveness_sequences(faces_dir: Path) -> dict[str, list[bytes]]:
    """Head movements synthesised once from a real photo, as the tests do (MTCNN finds the face)."""
    from loadtests.synthetic import SWEEP, scaled, turn_head
    from ml.images import decode_image
    from ml.pipeline import FacePipeline

    pipeline = FacePipeline()
    still = scaled(
        decode_image((faces_dir / "person_a_2.jpg").read_bytes(), pipeline.settings), 0.6
    )
    (face,) = pipeline.analyse(still).faces
    moves = {"turn_left": ("yaw", 1), "turn_right": ("yaw", -1), "nod": ("pitch", 1)}
    return {
        movement: [_jpeg(turn_head(still, face.face, sign * angle, axis)) for angle in SWEEP]
        for movement, (axis, sign) in moves.items()
    }


async def organiser_session(
    http: aiohttp.ClientSession, username: str, password: str
) -> dict[str, str]:
    async with http.post(
        "/v1/staff/sessions", json={"username": username, "password": password}
    ) as r:
        if r.status != 201:
            raise SystemExit(f"organiser login failed: {r.status} {await r.text()}")
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def create_exam(
    http: aiohttp.ClientSession,
    organiser: dict[str, str],
    candidates: int,
    *,
    region: str,
    hosts: tuple[str, ...],
    room_size: int = ROOM_SIZE,
) -> Scenario:
    exam_id = f"rehearsal{secrets.token_hex(3)}"
    now = datetime.now(UTC)
    spec = {
        "id": exam_id,
        "title": "Exam-day rehearsal",
        # Started a moment ago: candidates join as they arrive (a first join is refused
        # after the late cut-off, 15 minutes by default: longer ramps need a later start).
        "starts_at": (now - timedelta(seconds=30)).isoformat(),
        "ends_at": (now + timedelta(hours=3)).isoformat(),
        "region": region,
        "room_capacity": room_size,
    }
    await _expect(http.post("/v1/exams", json=spec, headers=organiser), 201)
    rooms: dict[str, list[str]] = {}
    for n in range(candidates):
        rooms.setdefault(f"room{n // room_size:03d}", []).append(f"{100000 + n}")
    rows = ["exam_no,candidate_no,name,date_of_birth,room,guardian_consent"]
    rows += [f"{exam_id},{c},Candidate {c},2000-01-01,{r}," for r, cs in rooms.items() for c in cs]
    await _expect(
        http.post(
            f"/v1/exams/{exam_id}/roster",
            data="\n".join(rows).encode(),
            headers={**organiser, "Content-Type": "text/csv"},
        ),
        200,
    )
    scenario = Scenario(exam_id, hosts, rooms)
    for room in rooms:
        username, password = f"proctor-{exam_id[-6:]}-{room}", secrets.token_urlsafe(16)
        body = {"username": username, "password": password, "role": "proctor"}
        await _expect(http.post("/v1/staff", json=body, headers=organiser), 201)
        await _expect(
            http.put(f"/v1/exams/{exam_id}/rooms/{room}/proctors/{username}", headers=organiser),
            204,
        )
        scenario.proctors[room] = (username, password)
    return scenario


async def _expect(request: aiohttp.client._RequestContextManager, status: int) -> None:
    async with request as response:
        if response.status != status:
            raise SystemExit(f"set-up failed: {response.status} {await response.text()}")


async def enrol_faces(
    http: aiohttp.ClientSession,
    organiser: dict[str, str],
    scenario: Scenario,
    cids: list[str],
    photo: bytes,
) -> None:
    """The organiser enrols each candidate's face from `photo` (person A), waiting out a
    busy verifier (503) as a client should."""
    semaphore = asyncio.Semaphore(4)
    headers = {**organiser, "Content-Type": "image/jpeg"}

    async def enrol(cid: str) -> None:
        url = f"/v1/exams/{scenario.exam_id}/candidates/{cid}/face"
        async with semaphore:
            for _attempt in range(30):
                async with http.put(url, data=photo, headers=headers) as response:
                    if response.status == 200:
                        return
                    if response.status != 503:
                        raise SystemExit(
                            f"enrolment failed: {response.status} {await response.text()}"
                        )
                await asyncio.sleep(1.0)
            raise SystemExit(f"enrolment of {cid} refused busy 30 times")

    await asyncio.gather(*(enrol(cid) for cid in cids))


async def candidate_ids(
    http: aiohttp.ClientSession, organiser: dict[str, str], scenario: Scenario, wanted: set[str]
) -> dict[str, str]:
    """Candidate number -> opaque id, for the candidates a proctor will watch (from the roster)."""
    found: dict[str, str] = {}
    semaphore = asyncio.Semaphore(16)

    async def identify(room: str, cid: str) -> None:
        async with (
            semaphore,
            http.get(
                f"/v1/exams/{scenario.exam_id}/rooms/{room}/candidates/{cid}", headers=organiser
            ) as response,
        ):
            if response.status == 200:
                number = (await response.json())["candidate_no"]
                if number in wanted:
                    found[number] = cid

    for room, numbers in scenario.rooms.items():
        if not wanted.intersection(numbers):
            continue
        async with http.get(f"/v1/exams/{scenario.exam_id}/rooms/{room}", headers=organiser) as r:
            roster = (await r.json())["roster"] if r.status == 200 else []
        await asyncio.gather(*(identify(room, cid) for cid in roster))
    return found
