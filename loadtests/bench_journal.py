"""`examday bench journal`: what durability costs a room journal, per AOF fsync policy.

A room shard answers an event only after `Journal.append` returned, so the
append's latency is in every heartbeat's and every incident's answer, and the
AOF's fsync policy decides what a crash can take: `off` (no AOF: everything
since start), `everysec` (about the last second), `always` (nothing
acknowledged). One run starts three private redis-servers on loopback, one per
policy, each with its own data directory, and drives the real
`Journal.append`, fenced as a shard holds it, from `--writers` concurrent
writers (one room each, as a shard commits one room at a time) for
`--seconds` per policy, one policy after the other so they do not share the
CPU. Printed per policy: acknowledged appends per second, p50 and p99
latency; and each policy's throughput as a fraction of `off`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.rooms.journal import Journal
from infra import redis as hot
from infra import services
from infra.processes import ManagedProcess, port_open
from infra.settings import Settings
from infra.stack import isolated_settings

POLICIES = ("off", "everysec", "always")


def _redis(policy: str, data: Path, port: int) -> ManagedProcess:
    """A private redis-server with `policy`, built here (not by `services.redis_process`)
    so that the policy is exactly what is measured, whatever the stack's default."""
    data.mkdir(parents=True, exist_ok=True)
    aof = ["--appendonly", "no"] if policy == "off" else ["--appendonly", "yes"]
    fsync = [] if policy == "off" else ["--appendfsync", policy]
    argv = [
        str(services.redis_server_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data),
        *aof, *fsync,
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
    ]  # fmt: skip
    return ManagedProcess(f"redis-{policy}", argv, data / "redis.log")


def _percentile(sorted_ms: list[float], fraction: float) -> float:
    if not sorted_ms:
        return 0.0
    return sorted_ms[min(len(sorted_ms) - 1, int(fraction * len(sorted_ms)))]


async def _drive(settings: Settings, writers: int, seconds: float) -> dict[str, Any]:
    # The pool every examday process uses: its timeouts and size are part of what is measured.
    redis = hot.connect(settings)
    journal = Journal(redis)
    latencies: list[float] = []
    try:
        rooms = [f"bench:{uuid.uuid4().hex[:8]}:r{i}" for i in range(writers)]
        fences = [await journal.take_over(room, "bench-shard") for room in rooms]
        tails = ["0-0"] * writers
        deadline = time.perf_counter() + seconds

        async def writer(index: int) -> None:
            room, fence = rooms[index], fences[index]
            while time.perf_counter() < deadline:
                event = {"type": "heartbeat", "cid": f"c{index}", "eid": uuid.uuid4().hex}
                started = time.perf_counter()
                ids = await journal.append(room, fence, [event], tails[index])
                latencies.append((time.perf_counter() - started) * 1000)
                tails[index] = ids[-1]

        started = time.perf_counter()
        await asyncio.gather(*(writer(i) for i in range(writers)))
        elapsed = time.perf_counter() - started
    finally:
        await redis.aclose()
    latencies.sort()
    return {
        "appends": len(latencies),
        "seconds": round(elapsed, 3),
        "appends_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "mean_ms": round(statistics.fmean(latencies), 3) if latencies else 0.0,
    }


def _measure(root: Path, policy: str, writers: int, seconds: float) -> dict[str, Any]:
    settings = isolated_settings(root / policy)
    port = settings.redis_port
    server = _redis(policy, root / policy / "redis", port)
    try:
        server.start()
        server.wait_healthy(lambda: port_open("127.0.0.1", port), 20)
        return {"policy": policy, **asyncio.run(_drive(settings, writers, seconds))}
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="examday bench journal", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="per policy (0.5-600)")
    parser.add_argument("--writers", type=int, default=32, help="concurrent writers (1-1024)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not (0.5 <= args.seconds <= 600 and 1 <= args.writers <= 1024):
        parser.error("--seconds 0.5-600, --writers 1-1024")
    with tempfile.TemporaryDirectory(prefix="examday-bench-journal-") as state:
        runs = [_measure(Path(state), p, args.writers, args.seconds) for p in POLICIES]
    by_policy = {run.pop("policy"): run for run in runs}
    base = by_policy["off"]["appends_per_s"] or 1.0
    result = {
        "writers": args.writers,
        "seconds_per_policy": args.seconds,
        "policies": by_policy,
        "ratio_to_off": {p: round(r["appends_per_s"] / base, 3) for p, r in by_policy.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.writers} writers, {args.seconds:g} s per policy")
        print(f"{'policy':>9} {'appends/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'vs off':>7}")
        for policy, run in by_policy.items():
            ratio = result["ratio_to_off"][policy]
            print(
                f"{policy:>9} {run['appends_per_s']:>10} {run['p50_ms']:>8} "
                f"{run['p99_ms']:>8} {ratio:>7}"
            )
    return 0 if all(run["appends"] > 0 for run in by_policy.values()) else 1
