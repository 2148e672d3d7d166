"""Log ingestion throughput: raw pipelined XADD vs records acknowledged through the gateway
and the LogIngest actors, side by side in one run on one embedded stack.

- raw: the same client records, one XADD per record, pipelined a batch at a time,
  straight from this process to Redis (no validation, no scrubbing, no HTTP);
- ours: NDJSON batches POSTed to a gateway process (uvicorn), validated,
  pseudonymised, handed to the owning LogIngest shard, scrubbed and appended
  (one entry per batch) with de-duplication, rate limits and aggregates; a
  record counts once its 202 is back. The shards flush to S3 meanwhile.

`ratio` = ours / raw, the median of a few rounds (raw then ours, each phase
starting on a flushed system, so that other load on a shared machine hits both
alike). Also reported: raw XADD with one entry per batch (the packing our path
uses), to show what the batching itself buys.

    examday bench ingest [--rounds 3] [--seconds 5] [--batch 1000] [--concurrency 8] [--json]
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
from pydantic import SecretStr

from core.keys import INGEST_STREAMS
from infra import redis as redis_conn
from infra.processes import free_port, free_port_block
from infra.redis import text
from infra.settings import RegionStore, Settings
from infra.stack import LocalStack, random_secrets

DEVICES = 2000
_CRASH_STACK = ',"stack":"java.lang.IllegalStateException\\n at app.Main.run(Main.kt:42)"'


def bench_settings(state_dir: Path) -> Settings:
    """A stack of its own on free loopback ports, like the tests'."""
    s3_port = free_port_block(8, 20000, 29000, also_offset=10000)
    # `test` refuses the dev placeholders: S3 credentials and keys of its own.
    access_key, secret_key = SecretStr(secrets.token_hex(10)), SecretStr(secrets.token_hex(20))
    regions = {
        name: RegionStore(
            endpoint=f"http://127.0.0.1:{s3_port}",
            bucket=f"examday-{name}",
            access_key=access_key,
            secret_key=secret_key,
        )
        for name in ("cn-north", "cn-east")
    }
    return Settings(
        **random_secrets(),
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
    http: httpx.AsyncClient, seconds: float, batch: int, concurrency: int
) -> dict[str, Any]:
    """Records acknowledged (202) per second with `concurrency` clients posting batches."""
    accepted = 0
    refused: dict[int, int] = {}
    source = batches(batch)

    async def client(deadline: float) -> None:
        nonlocal accepted
        while time.perf_counter() < deadline:
            response = await http.post(
                "/v1/logs",
                content=b"\n".join(next(source)),
                headers={"content-type": "application/x-ndjson"},
            )
            if response.status_code == 202:
                accepted += int(response.json()["accepted"])
            else:
                refused[response.status_code] = refused.get(response.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(started + seconds) for _ in range(concurrency)))
    return {
        "records_per_s": accepted / (time.perf_counter() - started),
        "refused": refused,
        "accepted": accepted,
    }


async def flushed(settings: Settings, within: float = 120.0) -> float:
    """Wait until the ingest shards have flushed everything (so the next phase runs on a
    quiet machine); returns how long that took."""
    redis = redis_conn.connect(settings)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < within:
            streams = [text(raw) for raw in await redis.smembers(INGEST_STREAMS)]
            if sum([await redis.xlen(stream) for stream in streams]) == 0:
                break
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
    return time.perf_counter() - started


async def measure(
    settings: Settings, rounds: int, seconds: float, batch: int, concurrency: int, warmup: float
) -> dict[str, Any]:
    """Rounds of raw then ours, each on a flushed system; other load on the machine hits
    both alike within a round, and the median round is reported."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    per_round = []
    refused: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=settings.gateway_url, limits=limits, timeout=60) as http:
        await through_gateway(http, warmup, batch, concurrency)  # shards start, code warms
        for _ in range(rounds):
            drain_s = await flushed(settings)
            raw = await raw_xadd(settings, seconds, batch, packed=False)
            ours = await through_gateway(http, seconds, batch, concurrency)
            for status, count in ours["refused"].items():
                refused[status] = refused.get(status, 0) + count
            per_round.append(
                {
                    "raw_xadd_records_per_s": round(raw),
                    "gateway_acknowledged_records_per_s": round(ours["records_per_s"]),
                    "ratio": round(ours["records_per_s"] / raw, 3) if raw else 0.0,
                    "previous_flush_s": round(drain_s, 1),
                }
            )
        await flushed(settings)
        packed = await raw_xadd(settings, seconds, batch, packed=True)
    return {"rounds": per_round, "refused": refused, "packed": packed}


def run(rounds: int, seconds: float, batch: int, concurrency: int, warmup: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="examday-bench-ingest-") as state:
        settings = bench_settings(Path(state))
        stack = LocalStack(settings, nodes=1, with_gateway=True)
        stack.start()
        try:
            figures = asyncio.run(measure(settings, rounds, seconds, batch, concurrency, warmup))
        finally:
            stack.stop()
    middle = sorted(figures["rounds"], key=lambda r: r["ratio"])[len(figures["rounds"]) // 2]
    return {
        "records_per_batch": batch,
        "concurrency": concurrency,
        "seconds_per_phase": seconds,
        "cpus": os.cpu_count(),
        "raw_xadd_records_per_s": middle["raw_xadd_records_per_s"],
        "gateway_acknowledged_records_per_s": middle["gateway_acknowledged_records_per_s"],
        "ratio": middle["ratio"],
        "goal_ratio_0_5": middle["ratio"] >= 0.5,
        "raw_xadd_packed_records_per_s": round(figures["packed"]),
        "rounds": figures["rounds"],
        "refused_responses": figures["refused"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase and round")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=1000, help="records per batch (max 1000)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    figures = run(args.rounds, args.seconds, args.batch, args.concurrency, args.warmup)
    print(json.dumps(figures) if args.json else json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
