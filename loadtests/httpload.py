"""A small closed-loop HTTP load generator (aiohttp) with latency percentiles.

Used by the benchmarks and the fleet: `run_closed_loop` keeps `concurrency`
requests in flight for `seconds`; `Latencies` summarises what came back.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Latencies:
    samples: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.perf_counter)
    ended: float = 0.0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def percentile(self, q: float) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return ordered[index]

    def summary(self) -> dict[str, Any]:
        elapsed = (self.ended or time.perf_counter()) - self.started
        return {
            "requests": len(self.samples),
            "errors": sum(self.errors.values()),
            "errors_by_reason": dict(self.errors),
            "req_per_s": round(len(self.samples) / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": round(self.percentile(50) * 1000, 2),
            "p95_ms": round(self.percentile(95) * 1000, 2),
            "p99_ms": round(self.percentile(99) * 1000, 2),
        }


Request = Callable[[aiohttp.ClientSession, int], Awaitable[tuple[int, str]]]


async def run_closed_loop(
    session: aiohttp.ClientSession,
    request: Request,
    *,
    concurrency: int,
    seconds: float,
    max_requests: int = 1_000_000,
) -> Latencies:
    """`request(session, n)` returns (status, reason); 2xx counts, anything else is an error."""
    latencies = Latencies()
    deadline = time.perf_counter() + seconds
    counter = iter(range(max_requests))

    async def worker() -> None:
        for n in counter:
            if time.perf_counter() >= deadline:
                return
            began = time.perf_counter()
            try:
                status, reason = await request(session, n)
            except (aiohttp.ClientError, TimeoutError) as exc:
                latencies.errors[type(exc).__name__] += 1
                continue
            if 200 <= status < 300:
                latencies.add(time.perf_counter() - began)
            else:
                latencies.errors[f"{status} {reason}"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.ended = time.perf_counter()
    return latencies


async def problem_reason(response: aiohttp.ClientResponse) -> str:
    if response.status < 400:
        return ""
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return "unparsable"
    return str(body.get("reason", "")) if isinstance(body, dict) else ""
