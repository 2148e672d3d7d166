"""Face tests: the real gateway, verifier replicas and monitor on the session stack, real photos."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from api.runtime import Runtime
from infra.settings.ml import FaceSettings
from ml.images import RGBImage, decode_image
from tests.support.factories import ExamWorld

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def photo_bytes(stem: str) -> bytes:
    return (FACES / f"{stem}.jpg").read_bytes()


def photo(stem: str) -> RGBImage:
    return decode_image(photo_bytes(stem), FaceSettings())


def jpeg(image: RGBImage, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def image_headers(headers: httpx.Headers, content_type: str = "image/jpeg") -> httpx.Headers:
    return httpx.Headers({**headers, "content-type": content_type})


async def enrol(
    client: httpx.AsyncClient, world: ExamWorld, number: str, body: bytes
) -> httpx.Response:
    cid = world.candidate_ids[number]
    return await client.put(
        f"/v1/exams/{world.exam_id}/candidates/{cid}/face",
        content=body,
        headers=image_headers(world.organiser),
    )


async def stored_keys(runtime: Runtime, exam_id: str) -> list[str]:
    return sorted(str(entry["Key"]) for entry in await runtime.regional.list(exam_id))


@pytest.fixture(scope="session")
def face_settings() -> FaceSettings:
    return FaceSettings(device="cpu")
