"""Manual review of failed face verifications, by the proctors of the candidate's room.

A review opens when a candidate used up `exam.face_attempts` (see `actors.face.service`). The
proctor sees the enrolment photo (when the exam keeps it) next to the live frames of
the failed attempts, and accepts or rejects; the decision is kept in Redis and
journaled into the room as a `face_review` event, so the audit trail is the journal.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import StringConstraints

from api.deps import RuntimeDep
from api.models import Strict
from api.security import RoomScope, RoomScopeDep
from core import keys, room_text
from infra.errors import Conflict, Forbidden, NotFound
from infra.redis import text

router = APIRouter(prefix="/v1/exams/{exam_id}/rooms/{room_id}/face-reviews", tags=["face"])
ReviewId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]
_MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


class DecisionIn(Strict):
    decision: Literal["accept", "reject"]
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None


@router.get("")
async def list_reviews(room: RoomScopeDep, runtime: RuntimeDep) -> dict[str, Any]:
    exam_id, room_id = room.exam_id, room.room_id
    ids = sorted(
        text(m) for m in await runtime.redis.smembers(keys.face_room_reviews_key(exam_id, room_id))
    )
    raws = await runtime.redis.hmget(keys.face_reviews_key(exam_id), ids) if ids else []
    reviews = [await _public(runtime, exam_id, json.loads(raw)) for raw in raws if raw]
    return {"reviews": sorted(reviews, key=lambda review: review["created_at"])}


@router.get("/{review_id}")
async def get_review(
    room: RoomScopeDep, review_id: ReviewId, runtime: RuntimeDep
) -> dict[str, Any]:
    return await _public(runtime, room.exam_id, await _review(runtime, room, review_id))


@router.get("/{review_id}/enrolled")
async def enrolled_photo(room: RoomScopeDep, review_id: ReviewId, runtime: RuntimeDep) -> Response:
    review = await _review(runtime, room, review_id)
    if not review["enrolled_photo"]:
        raise NotFound("This exam does not keep enrolment photos.", reason="no_enrolment_photo")
    return await _image(runtime, room.exam_id, review["enrolled_photo"])


@router.get("/{review_id}/live/{index}")
async def live_frame(
    room: RoomScopeDep,
    review_id: ReviewId,
    index: Annotated[int, Path(ge=0, le=100)],
    runtime: RuntimeDep,
) -> Response:
    review = await _review(runtime, room, review_id)
    if index >= len(review["live"]):
        raise NotFound("no such live frame", reason="frame_not_found")
    return await _image(runtime, room.exam_id, review["live"][index]["key"])


@router.post("/{review_id}")
async def decide(
    room: RoomScopeDep, review_id: ReviewId, body: DecisionIn, runtime: RuntimeDep
) -> dict[str, Any]:
    """Accept or reject, once; journaled into the room as a `face_review` event."""
    staff, exam_id = room.principal, room.exam_id
    if staff.role not in ("proctor", "chief-proctor"):
        raise Forbidden("Only the room's proctors decide reviews.", reason="proctors_only")
    review = await _review(runtime, room, review_id)
    redis = runtime.redis
    # One decision per review, even when two proctors click at once.
    decided = f"{keys.face_reviews_key(exam_id)}:{review_id}:decided"
    if review["status"] != "pending" or not await redis.set(decided, staff.name, nx=True):
        raise Conflict("This review is decided already.", reason="review_decided")
    status = "accepted" if body.decision == "accept" else "rejected"
    review.update(status=status, decided_by=staff.name, decided_at=time.time(), note=body.note)
    # The proctor's reason may name the candidate or what they look like: kept sealed, in
    # the review and in the journal (`core.room_text`), and opened for whoever reads it.
    review = await room_text.sealed(runtime.exams.keys, exam_id, review)
    cid = review["cid"]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.face_reviews_key(exam_id), review_id, json.dumps(review))
        pipe.hget(keys.face_record_key(exam_id, cid), "review")
        _, current = await pipe.execute()
    if current is not None and text(current) == review_id:  # not enrolled again since
        await redis.hset(keys.face_record_key(exam_id, cid), "status", status)
    event = {
        "type": "face_review",
        "cid": cid,
        "review": review_id,
        "decision": status,
        "by": staff.name,
        "note": body.note,  # the proctor's reason belongs in the audit trail with the decision
    }
    await runtime.rooms.append(room.key, await room_text.sealed(runtime.exams.keys, exam_id, event))
    return await _public(runtime, exam_id, review)


async def _review(runtime: RuntimeDep, room: RoomScope, review_id: str) -> Any:
    raw = await runtime.redis.hget(keys.face_reviews_key(room.exam_id), review_id)
    review = json.loads(raw) if raw else None
    if review is None or review["room"] != room.room_id:
        raise NotFound("no such review in this room", reason="review_not_found")
    return review


async def _public(runtime: RuntimeDep, exam_id: str, review: dict[str, Any]) -> dict[str, Any]:
    review = await room_text.opened(runtime.exams.keys, exam_id, review)
    base = f"/v1/exams/{exam_id}/rooms/{review['room']}/face-reviews/{review['id']}"
    return {
        "id": review["id"],
        "candidate": review["cid"],
        "status": review["status"],
        "created_at": review["created_at"],
        "enrolled_photo": f"{base}/enrolled" if review["enrolled_photo"] else None,
        "live": [
            {"index": i, "score": round(frame["score"], 4), "url": f"{base}/live/{i}"}
            for i, frame in enumerate(review["live"])
        ],
        "decided_by": review.get("decided_by"),
        "decided_at": review.get("decided_at"),
        "note": review.get("note"),
    }


async def _image(runtime: RuntimeDep, exam_id: str, key: str) -> Response:
    body = await runtime.regional.get(exam_id, key)
    media_type = _MEDIA_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=media_type, headers=headers)
