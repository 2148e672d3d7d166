"""Candidates share photos (an answer sheet) and whiteboard snapshots; their room's staff see them.

An upload is an image (JPEG, PNG or WebP within the face pipeline's limits on
bytes and pixels), checked before anything is stored, then sealed with the
exam's data key in the exam's region. Each one is journaled into the room, so
proctors watching the room see it arrive. Every attempt, refused or not, spends
one of the candidate's `upload_attempts_per_window` (429 `upload_limit`). The policy
consent and the guardian gate come first (`api.security.ConsentedDep`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from api.deps import RuntimeDep
from api.security import Consented, ConsentedDep, RoomScopeDep
from core import keys
from core.exam import Identifier
from infra.errors import UnsupportedMediaType

router = APIRouter(tags=["uploads"])


async def _upload(
    data_class: str, request: Request, consented: Consented, runtime: RuntimeDep
) -> dict[str, Any]:
    principal, exam_id, room = consented.principal, consented.exam.id, consented.candidate.room
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        raise UnsupportedMediaType(
            "send the image as image/jpeg, png or webp", reason="image_required"
        )
    # Spent before the body is read: a refused upload (too big, wrong type, undecodable)
    # costs its sender as much as a stored one, so it cannot be repeated for free.
    await runtime.privacy.spend_upload_attempt(exam_id, principal.name)
    body = await request.body()
    entry = await runtime.privacy.store_upload(exam_id, room, principal.name, data_class, body)
    event = {"type": "upload", "cid": principal.name, "upload": entry["id"], "class": data_class}
    await runtime.rooms.append(keys.room_key(exam_id, room), event)
    return _public(entry)


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "key"}


@router.post("/v1/uploads/photos", status_code=201)
async def upload_photo(
    request: Request, consented: ConsentedDep, runtime: RuntimeDep
) -> dict[str, Any]:
    return await _upload("photos", request, consented, runtime)


@router.post("/v1/uploads/whiteboards", status_code=201)
async def upload_whiteboard(
    request: Request, consented: ConsentedDep, runtime: RuntimeDep
) -> dict[str, Any]:
    return await _upload("whiteboards", request, consented, runtime)


@router.get("/v1/exams/{exam_id}/rooms/{room_id}/uploads")
async def room_uploads(scope: RoomScopeDep, runtime: RuntimeDep) -> dict[str, Any]:
    entries = await runtime.privacy.room_uploads(scope.exam_id, scope.room_id)
    base = f"/v1/exams/{scope.exam_id}/rooms/{scope.room_id}/uploads"
    return {"uploads": [{**_public(e), "url": f"{base}/{e['id']}"} for e in entries]}


@router.get("/v1/exams/{exam_id}/rooms/{room_id}/uploads/{upload_id}")
async def upload_bytes(scope: RoomScopeDep, upload_id: Identifier, runtime: RuntimeDep) -> Response:
    body, media_type = await runtime.privacy.upload_bytes(scope.exam_id, scope.room_id, upload_id)
    return Response(body, media_type=media_type, headers={"Cache-Control": "no-store"})
