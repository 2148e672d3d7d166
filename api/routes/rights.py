"""A candidate's rights beyond a JSON copy: the archive, corrections, complaints, withdrawal.

`GET /v1/me/archive` is a zip of everything kept about the caller: identity, consents,
their own events of the room's timeline, uploads, face records (never the template),
their own recordings and the logs of the devices that sent logs with their token (never
a device the caller names: a device id could be anyone's). It is built server-side into
a spooled file (memory stays bounded, the recordings and uploads by
`rights.max_archive_bytes`; what does not fit is listed in the manifest as left out) and
streamed. Correction requests and complaints are filed by the candidate and answered by
the exam's organiser; every request, answer and withdrawal is an entry of the region's
audit chain (ids and kinds only: the text stays sealed in Redis, under the `requests`
retention class).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints

from api.deps import RuntimeDep
from api.media_http import end_candidate_sessions
from api.models import Strict
from api.security import CandidateDep, OrganiserExamDep, Principal
from core import keys
from core.exam import Exam, Identifier
from core.exams import Candidate
from core.rights import Answer, RequestKind, RightsRequests
from infra.errors import InvalidInput, NotFound
from infra.redis import blob

router = APIRouter(tags=["privacy"])

_CHUNK = 64 * 1024
_SPOOL = 8 * 1024 * 1024
_LOG_RECORDS = 1000
IDENTITY_FIELDS = ("name", "candidate_no", "date_of_birth")
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]


class RightsRequestIn(Strict):
    kind: RequestKind
    # What a correction is about (free for a complaint).
    field: Literal["name", "date_of_birth", "candidate_no", "other"] | None = None
    text: Text


class RightsAnswerIn(Strict):
    status: Answer
    answer: Text


async def _me(runtime: RuntimeDep, principal: Principal) -> tuple[Candidate, Exam]:
    exam_id = principal.claims.exam
    candidate = None if exam_id is None else await runtime.exams.candidate(exam_id, principal.name)
    if candidate is None:
        raise NotFound("no such candidate", reason="candidate_not_found")
    return candidate, await runtime.exams.get(candidate.exam)


def _requests(runtime: RuntimeDep) -> RightsRequests:
    return RightsRequests(runtime.redis, runtime.exams.keys)


async def _audit(runtime: RuntimeDep, exam: Exam, kind: str, body: dict[str, Any]) -> None:
    await runtime.privacy.audit(exam.region).append(kind, body, exam=exam.id)


def _check_length(runtime: RuntimeDep, text: str) -> None:
    limit = runtime.settings.rights.max_request_chars
    if len(text) > limit:
        raise InvalidInput(f"at most {limit} characters", reason="text_too_long", limit=limit)


# -- the contact page ------------------------------------------------------------------


@router.get("/v1/privacy/contact")
async def contact(runtime: RuntimeDep) -> dict[str, Any]:
    """Who runs the platform and where to complain: public, the same for every exam."""
    r = runtime.settings.rights
    return {
        "operator": {"zh-CN": r.operator_name_zh, "en": r.operator_name},
        "contact": r.contact_address,
        "effective_date": r.effective_date.isoformat(),
    }


# -- corrections and complaints -----------------------------------------------------------


@router.post("/v1/me/requests", status_code=201)
async def file_request(
    body: RightsRequestIn, principal: CandidateDep, runtime: RuntimeDep
) -> dict[str, Any]:
    candidate, exam = await _me(runtime, principal)
    _check_length(runtime, body.text)
    if body.kind == "correction" and body.field is None:
        raise InvalidInput("say which field is wrong", reason="field_required")
    await runtime.privacy.spend_subject_request(exam.id, candidate.cid)
    limit = runtime.settings.rights.max_requests_per_candidate
    record = await _requests(runtime).file(
        exam.id, candidate.cid, body.kind, body.field, body.text, limit
    )
    audit = {"request": record["id"], "candidate": candidate.cid, "kind": body.kind}
    await _audit(runtime, exam, "rights_request", audit)
    return record


@router.get("/v1/me/requests")
async def my_requests(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    candidate, exam = await _me(runtime, principal)
    return {"requests": await _requests(runtime).list(exam.id, candidate.cid)}


@router.get("/v1/exams/{exam_id}/requests")
async def exam_requests(scope: OrganiserExamDep, runtime: RuntimeDep) -> dict[str, Any]:
    return {"requests": await _requests(runtime).list(scope.exam_id)}


@router.post("/v1/exams/{exam_id}/requests/{request_id}")
async def answer_request(
    request_id: Identifier, body: RightsAnswerIn, scope: OrganiserExamDep, runtime: RuntimeDep
) -> dict[str, Any]:
    _check_length(runtime, body.answer)
    exam = await runtime.exams.get(scope.exam_id)
    record = await _requests(runtime).answer(
        exam.id, request_id, body.status, body.answer, scope.principal.name
    )
    audit = {"request": request_id, "status": body.status, "by": scope.principal.name}
    await _audit(runtime, exam, "rights_answer", audit)
    return record


# -- withdrawal from the exam ---------------------------------------------------------------


@router.post("/v1/me/withdrawal")
async def withdraw_from_exam(principal: CandidateDep, runtime: RuntimeDep) -> dict[str, Any]:
    """End the caller's part in the exam: session and media end, the room sees `left`
    (why `withdrawn`), and join and publish are refused from now on."""
    candidate, exam = await _me(runtime, principal)
    await runtime.exams.mark_withdrawn(exam.id, candidate.cid)
    await end_candidate_sessions(runtime, exam.id, candidate.cid)
    room = keys.room_key(exam.id, candidate.room)
    await runtime.rooms.append(room, {"type": "left", "cid": candidate.cid, "why": "withdrawn"})
    at = time.time()
    await _audit(runtime, exam, "withdrawal", {"candidate": candidate.cid, "at": at})
    await runtime.sessions.end_active("candidate", exam.id, candidate.cid)
    return {"withdrawn": True, "at": at}


# -- the archive ---------------------------------------------------------------------------


@router.get("/v1/me/archive")
async def archive(principal: CandidateDep, runtime: RuntimeDep) -> StreamingResponse:
    candidate, exam = await _me(runtime, principal)
    await runtime.privacy.spend_subject_request(exam.id, candidate.cid)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115
    try:
        await _build(runtime, exam, candidate, spool)
    except BaseException:
        spool.close()
        raise
    name = f"examday-{exam.id}-{candidate.cid}.zip"
    return StreamingResponse(
        _stream(spool),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


async def _stream(spool: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(spool.seek, 0)
        while chunk := await asyncio.to_thread(spool.read, _CHUNK):
            yield chunk
    finally:
        spool.close()


class _Zip:
    """Parts written one at a time, off the event loop, within a byte budget for media."""

    def __init__(self, spool: IO[bytes], budget: int) -> None:
        self.zip = zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED)
        self.budget = budget
        self.files: list[dict[str, Any]] = []
        self.left_out: list[dict[str, Any]] = []

    async def json(self, name: str, value: Any) -> None:
        data = json.dumps(value, ensure_ascii=False, indent=1, default=str).encode()
        await asyncio.to_thread(self.zip.writestr, name, data)
        self.files.append({"file": name, "bytes": len(data)})

    def fits(self, size: int) -> bool:
        return size <= self.budget

    async def media(self, name: str, data: bytes) -> None:
        self.budget -= len(data)
        info = zipfile.ZipInfo(name, date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_STORED  # already compressed media
        await asyncio.to_thread(self.zip.writestr, info, data)
        self.files.append({"file": name, "bytes": len(data)})

    async def close(self) -> None:
        await asyncio.to_thread(self.zip.close)


async def _build(runtime: RuntimeDep, exam: Exam, candidate: Candidate, spool: IO[bytes]) -> None:
    limits = runtime.settings.rights
    out = _Zip(spool, limits.max_archive_bytes)
    cid = candidate.cid
    copy = await runtime.privacy.subject_copy(exam, cid, candidate.room)
    await out.json("identity.json", await _identity(runtime, exam, candidate))
    await out.json("consents.json", copy["consents"])
    await out.json("timeline.json", copy["timeline"])
    await out.json("requests.json", await _requests(runtime).list(exam.id, cid))
    uploads = copy["uploads"]
    for entry in uploads:
        data = await runtime.regional.get(exam.id, entry["key"])
        name = f"uploads/{entry['id']}.{str(entry['key']).rsplit('.', 1)[-1]}"
        await _media(out, name, data)
    await out.json("uploads.json", [{k: v for k, v in u.items() if k != "key"} for u in uploads])
    # The face record as kept in Redis, without the template or its key: what was done,
    # when, by whom and with which model, never the biometric vector itself.
    await out.json("face.json", await runtime.face.status(exam, cid))
    segments = await runtime.media.recordings.between(
        exam.id, cid, 0.0, time.time(), lookback=0.0, limit=limits.max_archive_segments
    )
    listed = []
    for s in segments:
        listed.append({"name": s.name, "source": s.source, "start": s.start, "end": s.end})
        if not out.fits(s.byte_size):
            out.left_out.append({"file": f"recordings/{s.name}", "bytes": s.byte_size})
            continue
        await _media(out, f"recordings/{s.name}", await runtime.regional.get(exam.id, s.key))
    await out.json("recordings.json", listed)
    await out.json("logs.json", await _logs(runtime, exam, cid))
    manifest = {
        "exam": {"id": exam.id, "title": exam.title, "region": exam.region},
        "candidate": cid,
        "made_at": time.time(),
        "files": out.files,
        "left_out": out.left_out,
    }
    await out.json("manifest.json", manifest)
    await out.close()


async def _media(out: _Zip, name: str, data: bytes) -> None:
    if out.fits(len(data)):
        await out.media(name, data)
    else:
        out.left_out.append({"file": name, "bytes": len(data)})


async def _identity(runtime: RuntimeDep, exam: Exam, candidate: Candidate) -> dict[str, Any]:
    raw = await runtime.redis.hgetall(keys.candidate_key(exam.id, candidate.cid))
    opened: dict[str, Any] = {}
    for name in IDENTITY_FIELDS:
        sealed = raw.get(name.encode())
        if sealed:
            value = await runtime.exams.keys.open(exam.id, f"identity:{name}", blob(sealed))
            opened[name] = value.decode()
    return {
        **opened,
        "candidate": candidate.cid,
        "exam": exam.id,
        "room": candidate.room,
        "minor": candidate.minor,
        "guardian_consent": candidate.has_guardian_consent,
    }


async def _logs(runtime: RuntimeDep, exam: Exam, cid: str) -> list[dict[str, Any]]:
    """The records of the devices that sent logs with the candidate's token in this exam
    (pseudonymised and scrubbed as support sees them), at most `_LOG_RECORDS` in all."""
    since = exam.starts_at - timedelta(days=30)
    until = exam.ends_at + timedelta(days=1)
    records: list[dict[str, Any]] = []
    for device in await runtime.ingest.candidate_devices(exam.id, cid):
        left = _LOG_RECORDS - len(records)
        if left <= 0:
            break
        records += await runtime.ingest.support(
            runtime.regional, exam.id, "d", device, since, until, left
        )
    return records
