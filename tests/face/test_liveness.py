"""Active liveness through the gateway: a random movement, answered with JPEG frames."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from actors.face.service import MOVEMENTS
from infra.settings.ml import FaceSettings
from loadtests.synthetic import SWEEP, scaled, turn_head
from ml.images import RGBImage
from ml.liveness import Movement
from ml.pipeline import FacePipeline
from tests.face.conftest import enrol, image_headers, jpeg, photo, photo_bytes, runtime_of
from tests.support.factories import consenting_candidate, new_exam

# How each asked movement is synthesised: axis, and the sign of the angle.
HOW = {"turn_left": ("yaw", +1), "turn_right": ("yaw", -1), "nod": ("pitch", +1)}


@pytest.fixture(scope="module")
def still() -> RGBImage:
    return scaled(photo("person_b_2"), 0.6)  # about webcam size


class Movements:
    """JPEG frames of each movement, warped from one real photo (see tests/ml), made on demand."""

    def __init__(self, settings: FaceSettings, still: RGBImage) -> None:
        self._still = still
        (self._face,) = FacePipeline(settings).analyse(still).faces
        self._made: dict[str, list[bytes]] = {}

    def __getitem__(self, movement: str) -> list[bytes]:
        if movement not in self._made:
            axis, sign = HOW[movement]
            self._made[movement] = [
                jpeg(turn_head(self._still, self._face.face, sign * angle, axis)) for angle in SWEEP
            ]
        return self._made[movement]


@pytest.fixture(scope="module")
def movements(face_settings: FaceSettings, still: RGBImage) -> Movements:
    return Movements(face_settings, still)


def frames_body(frames: list[bytes]) -> dict[str, list[str]]:
    return {"frames": [base64.b64encode(frame).decode() for frame in frames]}


def test_the_gateway_offers_the_library_movements() -> None:
    assert set(MOVEMENTS) == {str(m) for m in Movement}


async def test_a_still_photo_fails_and_the_asked_movement_passes(
    client: httpx.AsyncClient, app: FastAPI, still: RGBImage, movements: Movements
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["5001"]}, with_proctors=False)
    assert (await enrol(client, world, "5001", photo_bytes("person_b_1"))).status_code == 200
    headers = await consenting_candidate(client, world.exam_id, "5001")

    challenge = (await client.post("/v1/me/liveness/challenges", headers=headers)).json()
    assert challenge["movement"] in MOVEMENTS
    rng = np.random.default_rng(3)
    held_up = [  # a photo in front of the camera: the same picture under sensor noise
        jpeg(np.clip(still + rng.normal(0, 4, still.shape), 0, 255).astype(np.uint8))
        for _ in range(6)
    ]
    url = f"/v1/me/liveness/challenges/{challenge['nonce']}"
    failed = await client.post(url, json=frames_body(held_up), headers=headers)
    assert failed.status_code == 200, failed.text
    assert failed.json()["passed"] is False
    assert failed.json()["reason"] in ("static_frames", "no_movement")
    reused = await client.post(url, json=frames_body(movements["nod"]), headers=headers)
    assert reused.status_code == 404
    assert reused.json()["reason"] == "challenge_not_found"

    challenge = (await client.post("/v1/me/liveness/challenges", headers=headers)).json()
    answer = movements[challenge["movement"]]
    passed = await client.post(
        f"/v1/me/liveness/challenges/{challenge['nonce']}",
        json=frames_body(answer),
        headers=headers,
    )
    assert passed.status_code == 200, passed.text
    print(challenge["movement"], passed.json())
    assert passed.json()["passed"] is True
    assert "excursion" not in passed.json()  # candidates get passed or why not, no measure


async def test_the_wrong_movement_or_another_person_fails(
    client: httpx.AsyncClient, app: FastAPI, movements: Movements
) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["5101"]}, with_proctors=False)
    assert (await enrol(client, world, "5101", photo_bytes("person_a_1"))).status_code == 200
    headers = await consenting_candidate(client, world.exam_id, "5101")
    challenge = (await client.post("/v1/me/liveness/challenges", headers=headers)).json()
    # The frames show person B, who is not the enrolled candidate.
    answer = await client.post(
        f"/v1/me/liveness/challenges/{challenge['nonce']}",
        json=frames_body(movements[challenge["movement"]]),
        headers=headers,
    )
    assert answer.json()["reason"] == "identity_mismatch"


async def test_frames_are_bounded(client: httpx.AsyncClient, app: FastAPI) -> None:
    world = await new_exam(client, runtime_of(app), {"r1": ["5201"]}, with_proctors=False)
    headers = await consenting_candidate(client, world.exam_id, "5201")
    cases = [
        ({"frames": ["not base64!"] * 5}, 400, "bad_base64"),
        ({"frames": ["QUJD"] * 2}, 422, "too_few_frames"),
        (frames_body([b"\xff\xd8\xff" + b"0" * 300_000] + [b"0"] * 4), 413, "frame_too_large"),
        ({"frames": ["QUJD"] * 65}, 422, "invalid_input"),
    ]
    for body, status, reason in cases:
        challenge = (await client.post("/v1/me/liveness/challenges", headers=headers)).json()
        url = f"/v1/me/liveness/challenges/{challenge['nonce']}"
        response = await client.post(url, json=body, headers=headers)
        assert (response.status_code, response.json()["reason"]) == (status, reason), body
    wrong = await client.post(
        "/v1/me/liveness/challenges/AAAAAAAAAAAAAAAAAAAAAA", json={"frames": []}, headers=headers
    )
    assert wrong.json()["reason"] == "challenge_not_found"


async def test_joining_needs_the_match_and_a_passed_challenge(
    client: httpx.AsyncClient, app: FastAPI, still: RGBImage, movements: Movements
) -> None:
    world = await new_exam(
        client,
        runtime_of(app),
        {"r1": ["5301"]},
        with_proctors=False,
        require_face_verification=True,
    )
    assert (await enrol(client, world, "5301", photo_bytes("person_b_1"))).status_code == 200
    headers = await consenting_candidate(client, world.exam_id, "5301")

    async def join_refusal() -> str | None:
        response = await client.post("/v1/me/join", json={}, headers=headers)
        return None if response.status_code == 200 else str(response.json()["reason"])

    assert await join_refusal() == "face_verification_required"
    match = await client.post(
        "/v1/me/verification", content=jpeg(still), headers=image_headers(headers)
    )
    assert match.json()["match"] is True, match.text
    assert await join_refusal() == "liveness_required"  # a matching photo is not a person

    challenge = (await client.post("/v1/me/liveness/challenges", headers=headers)).json()
    url = f"/v1/me/liveness/challenges/{challenge['nonce']}"
    held_up = frames_body([jpeg(still)] * 6)
    assert (await client.post(url, json=held_up, headers=headers)).json()["passed"] is False
    assert await join_refusal() == "liveness_required"

    challenge = (await client.post("/v1/me/liveness/challenges", headers=headers)).json()
    url = f"/v1/me/liveness/challenges/{challenge['nonce']}"
    answer = frames_body(movements[challenge["movement"]])
    assert (await client.post(url, json=answer, headers=headers)).json()["passed"] is True
    assert await join_refusal() is None
