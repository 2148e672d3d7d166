"""Client logs, crash reports and usage metrics in; support queries and live aggregates out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from actors.ingest.client import Origin
from api.deps import RuntimeDep
from api.models import LogSearch
from api.security import StaffDep, check_exam, optional_token, require_consent
from core import aggregates, keys
from infra.errors import Forbidden, NotFound

router = APIRouter(prefix="/v1/logs", tags=["logs"])
Day = Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")]


async def _origin(request: Request, runtime: RuntimeDep) -> Origin:
    """A valid candidate token ties the batch to its exam (and region); none means anonymous.

    Logs tied to a candidate are their personal data (device ids, sessions), collected
    like any other only with the current consent to the policy (and a guardian's, for a
    minor): 403 `consent_required` otherwise, nothing stored. A client that has not
    consented yet sends its crash reports without the token: anonymous, scrubbed.
    """
    default = runtime.settings.ingest.default_region
    token = optional_token(request)
    if token is None:
        return Origin(default)
    claims, _ = await runtime.sessions.resolve(token)  # a bad token is a 401, as anywhere
    if claims.role != "candidate" or claims.exam is None:
        return Origin(default, token=token, name=claims.sub)
    candidate = await runtime.exams.candidate(claims.exam, claims.sub)
    if candidate is not None:  # a removed candidate's record is gone: scrub what is known
        require_consent(candidate, await runtime.exams.get(claims.exam))
    region = await runtime.regional.region_of(claims.exam)
    try:
        identity = await runtime.exams.identity(claims.exam, claims.sub)
    except NotFound:  # the roster row is gone: still bind the batch, scrub what is known
        identity = {}
    return Origin(
        region,
        exam=claims.exam,
        token=token,
        name=identity.get("name"),
        numbers=(identity.get("candidate_no", ""), claims.exam, claims.sub),
        candidate=claims.sub,
    )


@router.post("", status_code=202)
async def submit_records(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """A batch of records (JSON array or NDJSON, gzip allowed); 202 once all are in a stream."""
    origin = await _origin(request, runtime)
    body = await request.body()
    return await runtime.ingest.submit(
        body,
        request.headers.get("content-type", ""),
        request.headers.get("content-encoding", ""),
        origin,
    )


@router.post("/search")
async def search(body: LogSearch, staff: StaffDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Support: one device's or session's records over a time range, scrubbed and pseudonymised."""
    if body.exam is not None:
        await check_exam(runtime, staff, body.exam)
        scope = body.exam
    elif staff.role == "organiser":
        scope = keys.ANONYMOUS
    else:
        raise Forbidden("records without an exam are for organisers", reason="organisers_only")
    pseudonyms = runtime.ingest.pseudonyms
    if body.device or body.device_id:
        by, value = "d", body.device or pseudonyms.device(str(body.device_id))
    else:
        by, value = "s", body.session or pseudonyms.session(str(body.session_id))
    records = await runtime.ingest.support(
        runtime.regional, scope, by, value, body.since, body.until, body.limit
    )
    return {"scope": "exam" if body.exam else "anonymous", "records": records}


@router.get("/crash-stats")
async def crash_stats(
    staff: StaffDep,
    runtime: RuntimeDep,
    platform: Annotated[str | None, Query(pattern=r"^[a-z]{1,16}$")] = None,
    app_version: Annotated[str | None, Query(pattern=r"^[0-9.]{1,32}$")] = None,
) -> dict[str, Any]:
    """Crash-free sessions and crash counts per app version x platform x device model."""
    rows = await aggregates.crash_stats(runtime.redis, platform, app_version)
    return {"dimensions": [row.view() for row in rows]}


@router.get("/usage")
async def usage(day: Day, staff: StaffDep, runtime: RuntimeDep) -> dict[str, Any]:
    """Usage counters of one UTC day: metric name x platform x app version, no identity."""
    return {"day": day, "metrics": await aggregates.usage(runtime.redis, day)}
