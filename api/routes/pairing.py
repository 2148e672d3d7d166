"""Pairing a candidate's side device (a phone showing the desk) for WHIP `side`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import RuntimeDep
from api.media_http import may_publish
from api.security import CandidateDep

router = APIRouter(prefix="/v1/me", tags=["candidate"])


@router.post("/pairing", status_code=201)
async def pair_side_device(
    principal: CandidateDep, runtime: RuntimeDep, response: Response
) -> dict[str, Any]:
    """A short-lived token for a QR code; the side device POSTs `/v1/whip/me/side` with it."""
    exam_id, room = principal.claims.exam, principal.room
    assert exam_id is not None
    assert room is not None
    await may_publish(runtime, exam_id, principal.name)
    response.headers["Cache-Control"] = "no-store"
    token = await runtime.media.pairing.issue(exam_id, room, principal.name, principal.claims.sid)
    return {
        "token": token,
        "expires_in": runtime.settings.media.pairing_ttl_s,
        "whip": "/v1/whip/me/side",
    }
