"""Candidates share photos and whiteboard snapshots; only their room's staff see them."""

from __future__ import annotations

import io
import struct
import zlib

import httpx
from fastapi import FastAPI
from PIL import Image

from core import keys
from tests.privacy.conftest import (
    bucket_versions,
    image_bytes,
    image_headers,
    raw_object,
    runtime_of,
)
from tests.support.exif import assert_no_metadata, pixel_gap, with_gps
from tests.support.factories import candidate_login, joined_candidate, new_exam


def _png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A tiny PNG whose header declares 3.6 gigapixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    return out.getvalue()


async def test_photo_and_whiteboard_reach_the_rooms_proctor_sealed(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"], "r2": ["1002"]})
    me = await joined_candidate(client, world.exam_id, "1001")
    photo, board = image_bytes("PNG", seed=3), image_bytes("JPEG", seed=4)
    shared = await client.post("/v1/uploads/photos", content=photo, headers=image_headers(me))
    assert shared.status_code == 201, shared.text
    drawn = await client.post(
        "/v1/uploads/whiteboards", content=board, headers=image_headers(me, "image/jpeg")
    )
    assert drawn.status_code == 201, drawn.text

    base = f"/v1/exams/{world.exam_id}/rooms/r1/uploads"
    listed = (await client.get(base, headers=world.proctors["r1"])).json()["uploads"]
    assert [(u["id"], u["data_class"]) for u in listed] == [
        (shared.json()["id"], "photos"),
        (drawn.json()["id"], "whiteboards"),
    ]
    got = await client.get(listed[0]["url"], headers=world.proctors["r1"])
    assert got.status_code == 200
    assert pixel_gap(got.content, photo) == 0  # PNG: re-encoded losslessly
    assert got.headers["content-type"] == "image/png"
    # The proctor of the other room sees neither the list nor the bytes.
    assert (await client.get(base, headers=world.proctors["r2"])).status_code == 404
    assert (await client.get(listed[0]["url"], headers=world.proctors["r2"])).status_code == 404

    # Stored in the exam's region, sealed: the raw object is not the image.
    stored = await bucket_versions(runtime.stores, "cn-north", f"{world.exam_id}/")
    assert {str(v["Key"]).split("/")[1] for v in stored} == {"photos", "whiteboards"}
    for version in stored:
        raw = await raw_object(runtime.stores, "cn-north", str(version["Key"]))
        assert raw.startswith(b"ed1")
        assert photo not in raw
        assert board not in raw
    assert await bucket_versions(runtime.stores, "cn-east", f"{world.exam_id}/") == []


async def test_bad_uploads_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    me = await joined_candidate(client, world.exam_id, "1001")
    cases = [
        (b"this is not an image at all", "image/png", 400, "not_an_image"),
        (b"", "image/png", 400, "empty_image"),
        (_gif(), "image/gif", 415, "unsupported_image_type"),
        (_png_bomb(), "image/png", 413, "image_too_large"),
        (image_bytes("PNG"), "text/plain", 415, "image_required"),
        (image_bytes("PNG")[:200], "image/png", 400, "truncated_image"),
    ]
    for body, content_type, status, reason in cases:
        response = await client.post(
            "/v1/uploads/photos", content=body, headers=image_headers(me, content_type)
        )
        assert (response.status_code, response.json()["reason"]) == (status, reason), reason
        assert response.headers["content-type"] == "application/problem+json"
    too_big = b"\x89PNG" + b"\x00" * (runtime.settings.max_upload_bytes + 1)
    response = await client.post(
        "/v1/uploads/whiteboards", content=too_big, headers=image_headers(me)
    )
    assert response.status_code == 413
    # Before consenting to the policy, a candidate cannot share anything.
    other = await new_exam(client, runtime, {"r1": ["2001"]})
    stranger = await candidate_login(client, other.exam_id, "2001")
    refused = await client.post(
        "/v1/uploads/photos", content=image_bytes(), headers=image_headers(stranger)
    )
    assert refused.json()["reason"] == "consent_required"
    # A candidate who has shared the most uploads allowed gets 429 and nothing is stored.
    most = runtime.settings.privacy.max_uploads_per_candidate
    full = keys.privacy_uploads_key(world.exam_id, world.candidate_ids["1001"])
    await runtime.redis.hset(full, mapping={f"u{i}": "{}" for i in range(most)})
    limited = await client.post(
        "/v1/uploads/photos", content=image_bytes(), headers=image_headers(me)
    )
    assert (limited.status_code, limited.json()["reason"]) == (429, "upload_limit")
    await runtime.redis.delete(full)
    assert await bucket_versions(runtime.stores, "cn-north", f"{world.exam_id}/") == []
    assert await bucket_versions(runtime.stores, "cn-north", f"{other.exam_id}/") == []
    listed = await client.get(
        f"/v1/exams/{world.exam_id}/rooms/r1/uploads", headers=world.proctors["r1"]
    )
    assert listed.json()["uploads"] == []


async def test_a_photo_loses_its_exif_gps_xmp_and_comment_before_storage(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1051"]})
    me = await joined_candidate(client, world.exam_id, "1051")
    sent = with_gps(image_bytes("PNG", size=(96, 64), seed=5))
    shared = await client.post(
        "/v1/uploads/photos", content=sent, headers=image_headers(me, "image/jpeg")
    )
    assert shared.status_code == 201, shared.text
    base = f"/v1/exams/{world.exam_id}/rooms/r1/uploads"
    (listed,) = (await client.get(base, headers=world.proctors["r1"])).json()["uploads"]
    got = await client.get(listed["url"], headers=world.proctors["r1"])
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/jpeg"
    assert_no_metadata(got.content)
    assert pixel_gap(got.content, sent) < 3  # the same picture, up to JPEG rounding
    assert listed["bytes"] == len(got.content)
