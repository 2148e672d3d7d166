"""Review and grading of an exam's recordings, after the fact (issue #26 item 5).

Reviewers are an exam's examiners and chief proctors (assigned by its organiser) and its
organisers (`ReviewerExamDep`): they see every candidate of the exams assigned to them and
no other (404), while proctors, who watch rooms live, and candidates are refused (403).
Within that:

- the queue ranks the exam's candidates by risk (`core.review`, where the weights are);
- a candidate's whole session is every recorded segment of each source (camera, screen,
  side) with the room's timeline as markers; segments are served here, not by the room's
  recordings route, which examiners (no room) cannot use;
- any reviewer decides (`cleared | warning | voided`, with a note): journaled into the
  candidate's room as `review_decision` (without the note, which is sealed) before it is
  stored, so that no decision exists that the room's timeline does not show;
- the organiser sets the rubric; only examiners score, against it;
- the CSV export is for organisers and chief proctors. Candidate numbers and names are in
  it for organisers only: an export leaves the platform, and the organiser is who answers
  for the exam's personal data; a chief proctor's export names candidates by their opaque
  id, which the organiser can resolve.
"""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from api.deps import RuntimeDep
from api.models import ReviewDecisionIn, RubricIn, ScoresIn
from api.routes.recordings import SEGMENT_NAME
from api.runtime import Runtime
from api.security import OrganiserExamDep, ReviewerExamDep
from core import keys
from core.exam import Identifier
from core.exams import Candidate
from core.review import (
    WEIGHTS,
    Event,
    ReviewStore,
    Risk,
    liveness_of,
    markers_of,
    risk_of,
    room_journal,
)
from infra.errors import Forbidden, NotFound

router = APIRouter(prefix="/v1/exams/{exam_id}", tags=["review"])
MAX_SEGMENTS = 5000  # a whole day of 10 s segments of three sources, and more
MAX_PAGE = 100
# Characters that make a spreadsheet read a cell as a formula (or hide one after them).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _store(runtime: Runtime) -> ReviewStore:
    return ReviewStore(runtime.redis, runtime.keys)


async def _candidate(runtime: Runtime, exam_id: str, cid: str) -> Candidate:
    candidate = await runtime.exams.candidate(exam_id, cid)
    if candidate is None:
        raise NotFound("no such candidate in this exam", reason="candidate_not_found")
    return candidate


async def _until(runtime: Runtime, exam_id: str) -> float:
    """Where a disconnection that never ended stops counting: now, or the exam's end."""
    exam = await runtime.exams.get(exam_id)
    return min(time.time(), exam.ends_at.timestamp())


# -- rubric ---------------------------------------------------------------------------


@router.put("/rubric")
async def put_rubric(
    scope: OrganiserExamDep, body: RubricIn, runtime: RuntimeDep
) -> dict[str, Any]:
    criteria = [c.model_dump() for c in body.criteria]
    await _store(runtime).set_rubric(scope.exam_id, criteria, scope.principal.name)
    return {"criteria": criteria}


@router.get("/rubric")
async def get_rubric(scope: ReviewerExamDep, runtime: RuntimeDep) -> dict[str, Any]:
    return {"criteria": await _store(runtime).rubric(scope.exam_id)}


# -- the queue --------------------------------------------------------------------------


async def _risks(runtime: Runtime, exam_id: str) -> tuple[list[Risk], bool]:
    """Every candidate's risk, highest first (then by id), and whether a room's journal
    was too long to read whole."""
    until = await _until(runtime, exam_id)
    risks: list[Risk] = []
    truncated = False
    for room in sorted(await runtime.exams.rooms(exam_id)):
        roster = await runtime.exams.room_candidates(exam_id, room)
        journal = await room_journal(runtime.redis, exam_id, room, set(roster))
        truncated |= journal.truncated
        liveness = await liveness_of(runtime.redis, exam_id, roster)
        for cid in roster:
            events = journal.events.get(cid, [])
            outcome = liveness.get(cid, (None, 0.0))[0]
            risks.append(
                risk_of(cid, room, events, reviewed=journal.reviewed, until=until, liveness=outcome)
            )
    risks.sort(key=lambda r: (-r.score, r.cid))
    return risks, truncated


@router.get("/review/queue")
async def review_queue(
    scope: ReviewerExamDep,
    runtime: RuntimeDep,
    status: Literal["pending", "decided", "all"] = "all",
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
) -> dict[str, Any]:
    """The exam's candidates by risk, highest first; `pending`: those without a decision."""
    risks, truncated = await _risks(runtime, scope.exam_id)
    decisions = await _store(runtime).decisions(scope.exam_id)
    if status != "all":
        risks = [r for r in risks if (r.cid in decisions) == (status == "decided")]
    page = risks[offset : offset + limit]
    return {
        "exam": scope.exam_id,
        "status": status,
        "total": len(risks),
        "offset": offset,
        "limit": limit,
        "truncated": truncated,
        "weights": WEIGHTS,
        "candidates": [
            {**r.to_json(), "candidate": r.cid, "decision": decisions.get(r.cid)} for r in page
        ],
    }


# -- one candidate's session ------------------------------------------------------------


@router.get("/review/candidates/{candidate_id}/session")
async def candidate_session(
    scope: ReviewerExamDep, candidate_id: Identifier, runtime: RuntimeDep
) -> dict[str, Any]:
    """Every recorded segment (oldest first) by source, the timeline's markers, the risk,
    the current decision and its history, the score sheets and the rubric."""
    exam_id, cid = scope.exam_id, candidate_id
    candidate = await _candidate(runtime, exam_id, cid)
    until = await _until(runtime, exam_id)
    segments = await runtime.media.recordings.between(
        exam_id, cid, 0.0, time.time(), lookback=0.0, limit=MAX_SEGMENTS + 1
    )
    base = f"/v1/exams/{exam_id}/review/candidates/{cid}/recordings"
    sources: dict[str, list[dict[str, Any]]] = {}
    for s in sorted(segments[:MAX_SEGMENTS], key=lambda s: (s.start, s.segment)):
        sources.setdefault(s.source, []).append(
            {
                "name": s.name,
                "url": f"{base}/{s.name}",
                "session": s.session,
                "segment": s.segment,
                "start": s.start,
                "end": s.end,
                "media_type": s.media_type,
            }
        )
    journal = await room_journal(runtime.redis, exam_id, candidate.room, {cid})
    events: list[Event] = journal.events.get(cid, [])
    reviewed = journal.reviewed
    outcome, at = (await liveness_of(runtime.redis, exam_id, [cid])).get(cid, (None, 0.0))
    store = _store(runtime)
    spans = [s.start for s in segments] + [s.end for s in segments]
    return {
        "candidate": cid,
        "room": candidate.room,
        "start": min(spans) if spans else None,
        "end": max(spans) if spans else None,
        "truncated": len(segments) > MAX_SEGMENTS or journal.truncated,
        "sources": sources,
        "markers": markers_of(
            events, reviewed=reviewed, until=until, liveness=outcome, liveness_at=at
        ),
        "risk": risk_of(
            cid, candidate.room, events, reviewed=reviewed, until=until, liveness=outcome
        ).to_json(),
        "decision": (await store.decisions(exam_id)).get(cid),
        "history": await store.history(exam_id, cid),
        "sheets": (await store.sheets(exam_id, cid)).get(cid, []),
        "rubric": await store.rubric(exam_id),
    }


@router.get("/review/candidates/{candidate_id}/recordings/{segment}")
async def review_segment(
    scope: ReviewerExamDep, candidate_id: Identifier, segment: str, runtime: RuntimeDep
) -> Response:
    """One segment's bytes, from the exam's regional bucket."""
    await _candidate(runtime, scope.exam_id, candidate_id)
    found = None
    if re.fullmatch(SEGMENT_NAME, segment):
        found = await runtime.media.recordings.get(scope.exam_id, candidate_id, segment)
    if found is None:
        raise NotFound("no such recording", reason="recording_not_found")
    data = await runtime.regional.get(scope.exam_id, found.key)
    return Response(data, media_type=found.media_type, headers={"Cache-Control": "no-store"})


# -- decisions and scores ---------------------------------------------------------------


@router.post("/review/candidates/{candidate_id}/decision", status_code=201)
async def decide(
    scope: ReviewerExamDep,
    candidate_id: Identifier,
    body: ReviewDecisionIn,
    runtime: RuntimeDep,
) -> dict[str, Any]:
    candidate = await _candidate(runtime, scope.exam_id, candidate_id)
    event = {
        "type": "review_decision",
        "cid": candidate_id,
        "decision": body.decision,
        "by": scope.principal.name,
        "role": scope.principal.role,
    }
    event_id = await runtime.rooms.append(keys.room_key(scope.exam_id, candidate.room), event)
    record = await _store(runtime).decide(
        scope.exam_id, candidate_id, body.decision, body.note, scope.principal.name, event_id
    )
    return {"candidate": candidate_id, **record}


@router.put("/review/candidates/{candidate_id}/scores")
async def put_scores(
    scope: ReviewerExamDep, candidate_id: Identifier, body: ScoresIn, runtime: RuntimeDep
) -> dict[str, Any]:
    """The calling examiner's score sheet for the candidate (replacing their last one)."""
    if scope.principal.role != "examiner":
        raise Forbidden("only the exam's examiners score", reason="examiners_only")
    await _candidate(runtime, scope.exam_id, candidate_id)
    sheet = await _store(runtime).score(
        scope.exam_id, candidate_id, scope.principal.name, body.scores, body.comment
    )
    return {"candidate": candidate_id, **sheet}


# -- export ----------------------------------------------------------------------------------


def safe_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula gets a `'`."""
    cell = "" if value is None else str(value)
    return f"'{cell}" if cell.startswith(FORMULA_START) else cell


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds") if at else ""


@router.get("/review/export.csv")
async def export_csv(scope: ReviewerExamDep, runtime: RuntimeDep) -> Response:
    """One row per score sheet (a candidate nobody scored: one row without one)."""
    role = scope.principal.role
    if role not in ("organiser", "chief-proctor"):
        raise Forbidden("organisers and chief proctors export", reason="exporters_only")
    exam_id = scope.exam_id
    store = _store(runtime)
    risks, _ = await _risks(runtime, exam_id)
    decisions = await store.decisions(exam_id)
    sheets = await store.sheets(exam_id)
    criteria = [str(c["id"]) for c in await store.rubric(exam_id) or []]
    identity = role == "organiser"
    head = ["candidate", *(["candidate_no", "name"] if identity else []), "room", "risk_score"]
    head += ["decision", "decided_by", "decided_at", "decision_note", "examiner", "scored_at"]
    head += [*criteria, "total", "comment"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(head)
    for risk in sorted(risks, key=lambda r: (r.room, r.cid)):
        cid = risk.cid
        who: list[object] = []
        if identity:
            person = await runtime.exams.identity(exam_id, cid)
            who = [person["candidate_no"], person["name"]]
        decided = decisions.get(cid) or {}
        note = ""
        if decided:
            note = (await store.history(exam_id, cid))[-1]["note"]
        lead: list[object] = [cid, *who, risk.room, risk.score, decided.get("decision")]
        lead += [decided.get("by"), _when(decided.get("at")), note]
        rows: list[dict[str, Any] | None] = [*sheets.get(cid, [])] or [None]
        for sheet in rows:
            row = list(lead)
            if sheet is None:
                row += ["", "", *[""] * len(criteria), "", ""]
            else:
                points = sheet["points"]
                row += [sheet["examiner"], _when(sheet["at"])]
                row += [points.get(c, "") for c in criteria]
                row += [sheet["total"], sheet["comment"]]
            writer.writerow([safe_cell(v) for v in row])
    # A BOM, so that spreadsheet programs read the names as UTF-8.
    body = "\ufeff" + out.getvalue()
    return Response(
        body.encode(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": f'attachment; filename="review-{exam_id}.csv"',
        },
    )
