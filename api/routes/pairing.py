"""Pairing a candidate's side device (a phone showing the desk) for WHIP `side`.

The answer carries the phone page's link and its QR code, drawn here (segno, pure
Python) as SVG: the candidate page stays a build-free module that shows an `img` with
a `data:` URL, and no third party ever sees the token. The token travels in the link's
fragment (`/phone/#token=...`), which browsers never send to a server, so it reaches
no access log on the way.
"""

from __future__ import annotations

import io
from typing import Any

import segno
from fastapi import APIRouter, Request, Response

from api.deps import RuntimeDep
from api.media_http import may_publish
from api.security import CandidateDep
from infra.settings import Settings

router = APIRouter(prefix="/v1/me", tags=["candidate"])

PHONE_PAGE = "/phone/"
# Quartile error correction: a code filmed off a laptop screen survives glare and moiré.
QR_ERROR = "q"
QR_SCALE = 6


def page_origin(request: Request, settings: Settings) -> str:
    """The origin the candidate's page was loaded from, if it is one of ours (a phone must
    reach the same gateway, by the name the candidate used), else our first origin."""
    origin = (request.headers.get("origin") or "").lower()
    allowed = settings.allowed_origins
    return origin if origin in allowed else min(allowed)


def qr_svg(link: str) -> str:
    # A standalone document (namespace, size): an <img> shows it from a data: URL.
    buffer = io.BytesIO()
    segno.make(link, error=QR_ERROR).save(
        buffer, kind="svg", scale=QR_SCALE, border=4, dark="#000", light="#fff", xmldecl=False
    )
    return buffer.getvalue().decode()


@router.post("/pairing", status_code=201)
async def pair_side_device(
    principal: CandidateDep, runtime: RuntimeDep, request: Request, response: Response
) -> dict[str, Any]:
    """A short-lived token for a QR code; the side device POSTs `/v1/whip/me/side` with it."""
    exam_id, room = principal.claims.exam, principal.room
    assert exam_id is not None
    assert room is not None
    await may_publish(runtime, exam_id, principal.name)
    response.headers["Cache-Control"] = "no-store"
    token = await runtime.media.pairing.issue(exam_id, room, principal.name, principal.claims.sid)
    link = f"{page_origin(request, runtime.settings)}{PHONE_PAGE}#token={token}"
    return {
        "token": token,
        "expires_in": runtime.settings.media.pairing_ttl_s,
        "whip": "/v1/whip/me/side",
        "link": link,
        "qr_svg": qr_svg(link),
    }
