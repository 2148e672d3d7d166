"""Hostile and broken uploads: a clear 4xx each, nothing stored, the replica keeps serving."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image

from core import keys
from infra.settings import Settings
from tests.face.conftest import image_headers, photo, photo_bytes, runtime_of
from tests.support.factories import consenting_candidate, new_exam


def encoded(image: Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def transparent_png() -> bytes:
    rgba = np.dstack([photo("person_a_1"), np.full(photo("person_a_1").shape[:2], 255, np.uint8)])
    rgba[:40, :40, 3] = 0
    return encoded(Image.fromarray(rgba, "RGBA"), "PNG")


UPLOAD_LIMIT: int = Settings.model_fields["max_upload_bytes"].default


def pixel_bomb() -> bytes:
    """About 50 megapixels declared, a few kilobytes sent."""
    return encoded(Image.new("1", (7100, 7100)), "PNG")


BAD = {
    "not an image": (b"GET / HTTP/1.1\r\n\r\n" * 10, "image/jpeg", 400, "not_an_image"),
    "truncated jpeg": (photo_bytes("person_a_2")[:20_000], "image/jpeg", 400, "truncated_image"),
    "pixel bomb": (pixel_bomb(), "image/png", 413, "image_too_large"),
    "zero bytes": (b"", "image/jpeg", 400, "empty_image"),
    "wrong content type": (photo_bytes("person_a_1"), "text/plain", 415, "image_required"),
    "png with alpha": (transparent_png(), "image/png", 422, "alpha_channel"),
    "gif": (encoded(Image.new("RGB", (64, 64)), "GIF"), "image/gif", 415, "image_required"),
    "gif as jpeg": (
        encoded(Image.new("RGB", (64, 64)), "GIF"), "image/jpeg", 415, "unsupported_image_type"
    ),
    "over the body limit": (
        b"\xff\xd8\xff" + bytes(UPLOAD_LIMIT), "image/jpeg", 413, "payload_too_large"
    ),
}  # fmt: skip


async def test_every_bad_upload_gets_its_reason_and_nothing_is_stored(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    numbers = [f"60{index:02d}" for index in range(len(BAD) + 1)]
    world = await new_exam(client, runtime, {"r1": numbers}, with_proctors=False)
    good_number, *bad_numbers = numbers

    async def upload(number: str, body: bytes, content_type: str) -> httpx.Response:
        cid = world.candidate_ids[number]
        return await client.put(
            f"/v1/exams/{world.exam_id}/candidates/{cid}/face",
            content=body,
            headers=image_headers(world.organiser, content_type),
        )

    # All at once, with one good photo among them: bad images that land in the same
    # batch as the good one fail alone.
    good, *answers = await asyncio.gather(
        upload(good_number, photo_bytes("person_b_1"), "image/jpeg"),
        *(
            upload(number, body, content_type)
            for number, (body, content_type, _, _) in zip(bad_numbers, BAD.values(), strict=True)
        ),
    )
    assert good.status_code == 200, good.text
    for name, (_, _, status, reason), answer in zip(BAD, BAD.values(), answers, strict=True):
        assert answer.headers["content-type"].startswith("application/problem+json"), name
        assert (answer.status_code, answer.json()["reason"]) == (status, reason), name
    for number in bad_numbers:
        assert not await runtime.redis.exists(
            keys.face_record_key(world.exam_id, world.candidate_ids[number])
        )
    good_cid = world.candidate_ids[good_number]
    assert [o["Key"] for o in await runtime.regional.list(world.exam_id)] == [
        f"{world.exam_id}/face/{good_cid}/template.bin"
    ]

    # The same through verification: refused, no attempt counted, no evidence kept.
    headers = await consenting_candidate(client, world.exam_id, good_number)
    for body, content_type, status, reason in BAD.values():
        answer = await client.post(
            "/v1/me/verification", content=body, headers=image_headers(headers, content_type)
        )
        assert (answer.status_code, answer.json()["reason"]) == (status, reason)
    assert (await client.get("/v1/me/verification", headers=headers)).json()["attempts"] == 0
    assert len(await runtime.regional.list(world.exam_id)) == 1

    # And the replica still serves.
    assert (
        await upload(bad_numbers[0], photo_bytes("person_a_1"), "image/jpeg")
    ).status_code == 200
