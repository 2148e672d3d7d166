"""Legal holds and disclosure packages: organisers only, on their own exams.

A hold is released by the organiser who placed it, or by an admin (one who left,
or a hold that outlived its case), and admins may list an exam's holds to find it;
nothing else of an exam is theirs.

A hold (on the exam, or one candidate) keeps data from every deletion until
it is released; an export is a zip for an authority with a manifest of
objects and SHA-256 sums, stored in the exam's region. All of it is audited.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response

from actors.privacy.exports import EXAM_WIDE
from actors.privacy.holds import Hold
from api.deps import RuntimeDep
from api.models import ExportCreate, HoldCreate
from api.security import HoldReleaseDep, OrganiserExamDep
from core import keys
from core.exam import Identifier
from infra.errors import NotFound

router = APIRouter(prefix="/v1/exams/{exam_id}", tags=["privacy"])


async def _subject(runtime: RuntimeDep, exam_id: str, candidate: str | None) -> str:
    if candidate is None:
        return EXAM_WIDE
    if await runtime.exams.candidate(exam_id, candidate) is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    return candidate


def _hold(hold: Hold) -> dict[str, Any]:
    return {
        "id": hold.id,
        "candidate": None if hold.subject == EXAM_WIDE else hold.subject,
        "reference": hold.reference,
        "reason": hold.reason,
        "placed_by": hold.placed_by,
        "placed_at": hold.placed_at,
        "pinned_objects": hold.pinned,
    }


@router.post("/holds", status_code=201)
async def place_hold(
    body: HoldCreate, scope: OrganiserExamDep, runtime: RuntimeDep
) -> dict[str, Any]:
    subject = await _subject(runtime, scope.exam_id, body.candidate)
    hold = await runtime.privacy.holds.place(
        scope.exam_id, subject, body.reference, body.reason, scope.principal.name
    )
    return _hold(hold)


@router.get("/holds")
async def list_holds(scope: HoldReleaseDep, runtime: RuntimeDep) -> dict[str, Any]:
    return {"holds": [_hold(h) for h in await runtime.privacy.holds.all(scope.exam_id)]}


@router.delete("/holds/{hold_id}")
async def release_hold(
    scope: HoldReleaseDep, hold_id: Identifier, runtime: RuntimeDep
) -> dict[str, Any]:
    """403 `not_hold_placer` to an organiser who did not place it: a hold is its placer's
    case (an appeal, a court's order) and is not theirs to end."""
    principal = scope.principal
    hold = await runtime.privacy.holds.release(
        scope.exam_id, hold_id, principal.name, any_placer=principal.role == "admin"
    )
    return {**_hold(hold), "released": True}


@router.post("/exports", status_code=201)
async def create_export(
    body: ExportCreate, scope: OrganiserExamDep, runtime: RuntimeDep
) -> dict[str, Any]:
    subject = await _subject(runtime, scope.exam_id, body.candidate)
    record = await runtime.privacy.export(
        scope.exam_id, subject, body.reference, body.reason, scope.principal.name
    )
    record.pop("key", None)
    return {**record, "url": f"/v1/exams/{scope.exam_id}/exports/{record['id']}"}


@router.get("/exports")
async def list_exports(scope: OrganiserExamDep, runtime: RuntimeDep) -> dict[str, Any]:
    raw = await runtime.redis.hvals(keys.privacy_exports_key(scope.exam_id))
    records = sorted((json.loads(r) for r in raw), key=lambda r: float(r["at"]))
    return {"exports": [{k: v for k, v in r.items() if k != "key"} for r in records]}


@router.get("/exports/{export_id}")
async def download_export(
    scope: OrganiserExamDep, export_id: Identifier, runtime: RuntimeDep
) -> Response:
    body = await runtime.privacy.export_archive(scope.exam_id, export_id, scope.principal.name)
    return Response(
        body,
        media_type="application/zip",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="{export_id}.zip"',
        },
    )
