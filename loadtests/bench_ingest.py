"""Log ingestion throughput: raw pipelined XADD vs records acknowledged through the gateway
and the LogIngest actors, side by side in one run on one embedded stack.

- raw: the same client records, one XADD per record, pipelined a batch at a time,
  straight from this process to Redis (no validation, no scrubbing, no HTTP);
- ours: NDJSON batches POSTed to a gateway process (uvicorn), validated,
  pseudonymised, handed to the owning LogIngest shard, scrubbed and appended
  (one entry per batch) with de-duplication, rate limits and aggregates; a
  record counts once its 202 is back. The shards flush to S3 meanwhile.

`ratio` = ours / raw. Also reported: raw XADD with one entry per batch (the
packing our path uses), to show what the batching itself buys.

    examday bench ingest [--seconds 8] [--batch 500] [--concurrency 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from infra import redis as redis_conn
from infra.processes import free_port, free_port_block
from infra.settings import RegionStore, Settings
from infra.stack import LocalStack

DEVICES = 2000
_CRASH_STACK = ',"stack":"java.lang.IllegalStateException\\n at app.Main.run(Main.kt:42)"'


def bench_settings(state_dir: Path) -> Settings:
    """A stack of its own on free loopback ports, like the tests'."""
    s3_port = free_port_block(8, 20000, 29000, also_offset=10000)
    regions = {
        name: RegionStore(endpoint=f"http://127.0.0.1:{s3_port}", bucket=f"examday-{name}")
        for name in ("cn-north", "cn-east")
    }
    return Settings(
        env="test",
        state_dir=state_dir,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        regions=regions,
        s3_port=s3_port,
        ray_gcs_port=free_port(),
        ray_port_base=free_port_block(420, 40000, 52000),
        ray_node_memory_bytes=3 * 1024**3,
        ray_object_store_bytes=256 * 1024**2,
        gateway_port=free_port(),
    )


def _line(tag: str, n: int, device: str) -> bytes:
    """A realistic client record (about 330 bytes) with an id of its own."""
    kind = "crash" if n % 50 == 0 else "log"
    return (
        f'{{"id":"{tag}-{n}","kind":"{kind}","time":{time.time():.3f},"level":"info",'
        f'"message":"screen question-{n % 40} opened after {n % 997} ms, state ok",'
        f'"device_id":"{device}","session_id":"{device}-s","os":"android",'
        f'"os_version":"14","model":"Pixel 7","app_version":"3.1.0"'
        f"{_CRASH_STACK if kind == 'crash' else ''}}}"
    ).encode()


def batches(size: int) -> Iterator[list[bytes]]:
    """Batches of `size` records, each batch from one device (a device sends its own)."""
    tag = secrets.token_hex(4)
    for b in itertools.count():
        device = f"bench-{tag}-{b % DEVICES:05d}"
        yield [_line(tag, b * size + i, device) for i in range(size)]


async def raw_xadd(settings: Settings, seconds: float, batch: int, packed: bool) -> float:
    redis = redis_conn.connect(settings)
    stream = f"bench:raw:{secrets.token_hex(4)}"
    source = batches(batch)
    sent = 0
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            chunk = next(source)
            async with redis.pipeline(transaction=False) as pipe:
                if packed:
                    pipe.xadd(stream, {"r": b"\n".join(chunk)})
                else:
                    for line in chunk:
                        pipe.xadd(stream, {"r": line})
                await pipe.execute()
            sent += len(chunk)
        elapsed = time.perf_counter() - started
        await redis.delete(stream)
    finally:
        await redis.aclose()
    return sent / elapsed


async def through_gateway(
    settings: Settings, seconds: float, batch: int, concurrency: int, warmup: float
) -> dict[str, Any]:
    accepted = 0
    refused: dict[int, int] = {}
    source = batches(batch)
    measuring = False
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=settings.gateway_url, limits=limits, timeout=60) as http:

        async def client(deadline: float) -> None:
            nonlocal accepted
            while time.perf_counter() < deadline:
                response = await http.post(
                    "/v1/logs",
                    content=b"\n".join(next(source)),
                    headers={"content-type": "application/x-ndjson"},
                )
                if response.status_code != 202:
                    refused[response.status_code] = refused.get(response.status_code, 0) + 1
                elif measuring:
                    accepted += int(response.json()["accepted"])

        await asyncio.gather(*(client(time.perf_counter() + warmup) for _ in range(concurrency)))
        measuring = True
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"records_per_s": accepted / elapsed, "refused": refused}


def run(seconds: float, batch: int, concurrency: int, warmup: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="examday-bench-ingest-") as state:
        settings = bench_settings(Path(state))
        stack = LocalStack(settings, nodes=1, with_gateway=True)
        stack.start()
        try:
            ours = asyncio.run(through_gateway(settings, seconds, batch, concurrency, warmup))
            raw = asyncio.run(raw_xadd(settings, seconds, batch, packed=False))
            packed = asyncio.run(raw_xadd(settings, seconds, batch, packed=True))
        finally:
            stack.stop()
    ratio = ours["records_per_s"] / raw if raw else 0.0
    return {
        "records_per_batch": batch,
        "concurrency": concurrency,
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "raw_xadd_records_per_s": round(raw),
        "raw_xadd_packed_records_per_s": round(packed),
        "gateway_acknowledged_records_per_s": round(ours["records_per_s"]),
        "refused_responses": ours["refused"],
        "ratio": round(ratio, 3),
        "goal_ratio_0_5": ratio >= 0.5,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    figures = run(args.seconds, args.batch, args.concurrency, args.warmup)
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
