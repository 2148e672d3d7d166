"""`GET /metrics` (this gateway process) and `GET /metrics/cluster` (the whole cluster).

Prometheus text format, see api/metrics.py: scrape `/metrics` on every pod and
`/metrics/cluster` as one target (through the Service), so that cluster figures are
stored once whatever the number of gateways.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Header
from fastapi.responses import Response

from api.deps import RuntimeDep
from api.metrics import CONTENT_TYPE, POD_METRICS, ClusterSampler, render
from api.runtime import Runtime
from infra.errors import Unauthenticated
from infra.settings.ops import OpsSettings

router = APIRouter(tags=["operations"])


def sampler_of(runtime: Runtime) -> ClusterSampler:
    return ClusterSampler(
        ops=runtime.settings.ops,
        redis=runtime.redis,
        rooms=runtime.rooms,
        media=runtime.media.router,
        verifier=runtime.face.verifier.status,
        ingest=runtime.ingest.stats,
        regions=sorted(runtime.settings.regions),
        stores=runtime.stores.check,
        verifier_queue_limit=runtime.settings.verifier.max_queue,
    )


def check_token(ops: OpsSettings, authorization: str | None) -> None:
    """With `EXAMDAY_OPS__METRICS_TOKEN` set, a scrape must send it as a bearer token."""
    if ops.metrics_token is None:
        return
    sent = (authorization or "").removeprefix("Bearer ")
    if not hmac.compare_digest(sent.encode(), ops.metrics_token.get_secret_value().encode()):
        raise Unauthenticated("send the metrics token", reason="metrics_token_required")


@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep, authorization: str | None = Header(None)) -> Response:
    """This gateway process: request durations, process and runtime figures."""
    check_token(runtime.settings.ops, authorization)
    return Response(POD_METRICS.exposition(), media_type=CONTENT_TYPE)


@router.get("/metrics/cluster", response_class=Response)
async def cluster_metrics(
    runtime: RuntimeDep, authorization: str | None = Header(None)
) -> Response:
    """The whole cluster, read from the actors and Redis at scrape time."""
    check_token(runtime.settings.ops, authorization)
    sample = await sampler_of(runtime).sample()
    return Response(render(sample), media_type=CONTENT_TYPE)
