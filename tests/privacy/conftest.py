"""Helpers of the privacy tests: ended exams, real images, raw bucket listings."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image

from api.runtime import Runtime
from infra.objectstore import ObjectStores
from tests.support.factories import ExamWorld, joined_candidate, new_exam


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def image_bytes(kind: str = "PNG", size: tuple[int, int] = (64, 48), seed: int = 1) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, kind)
    return out.getvalue()


def short_policy(after: int = 1, trigger: str = "exam_end") -> list[dict[str, Any]]:
    return [
        {"data_class": c, "trigger": trigger, "after_seconds": after}
        for c in ("recordings", "photos", "face", "logs", "timelines")
    ]


async def ended_exam(
    client: httpx.AsyncClient,
    runtime: Runtime,
    rooms: dict[str, list[str]],
    *,
    region: str = "cn-north",
    retention: list[dict[str, Any]] | None = None,
    **exam: Any,
) -> ExamWorld:
    """An exam that ended a minute ago, with a one-second retention policy by default
    (short: `joined_before_the_end` can reopen it within its late cut-off)."""
    now = datetime.now(UTC)
    return await new_exam(
        client,
        runtime,
        rooms,
        region=region,
        starts_at=(now - timedelta(minutes=3)).isoformat(),
        ends_at=(now - timedelta(minutes=1)).isoformat(),
        retention=retention if retention is not None else short_policy(),
        **exam,
    )


async def joined_before_the_end(
    client: httpx.AsyncClient, runtime: Runtime, exam_id: str, number: str
) -> httpx.Headers:
    """A candidate of an `ended_exam` who joined while it ran: the exam runs again for an
    hour (`Exams.extend`, as the organiser's extension does), the candidate joins (join
    and publish are refused after the end), then the end goes back where it was."""
    await runtime.exams.extend(exam_id, 60)
    try:
        return await joined_candidate(client, exam_id, number)
    finally:
        await runtime.exams.extend(exam_id, -60)


async def bucket_versions(stores: ObjectStores, region: str, prefix: str) -> list[dict[str, Any]]:
    """Every version and delete marker under a prefix, read straight from the bucket."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"Bucket": stores.bucket(region), "Prefix": prefix}
    for _ in range(1000):
        page = await stores.call(region, "list_object_versions", **params)
        found += list(page.get("Versions", [])) + list(page.get("DeleteMarkers", []))
        if not page.get("IsTruncated"):
            return found
        params["KeyMarker"] = page.get("NextKeyMarker")
        params["VersionIdMarker"] = page.get("NextVersionIdMarker")
    raise AssertionError("listing did not end")


async def raw_object(stores: ObjectStores, region: str, key: str) -> bytes:
    response = await stores.call(region, "get_object", Bucket=stores.bucket(region), Key=key)
    body: bytes = response["Body"].read()
    return body


def image_headers(headers: httpx.Headers, content_type: str = "image/png") -> httpx.Headers:
    return httpx.Headers({**headers, "content-type": content_type})
