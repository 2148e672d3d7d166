"""The fleet's server sampler follows the stack's manifest: a service restarted under a new
pid (as the supervisor does) is sampled again, and while it is gone it is reported down."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from infra.processes import ManagedProcess
from infra.stack import LocalStack, isolated_settings
from loadtests.server_stats import ServerSampler

# A child that holds some memory, so that a sample of it shows a resident size.
HOLD = "import time; block = bytearray(32 << 20); time.sleep(600)"


async def _samples_until(sampler: ServerSampler, count: int) -> None:
    for _ in range(200):
        if len(sampler.samples) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(sampler.samples)} samples after 10 s, not {count}")


async def test_a_restarted_service_is_followed_and_its_gap_shown(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "state")
    settings.state_dir.mkdir(parents=True)
    service = ManagedProcess("store", [sys.executable, "-c", HOLD], tmp_path / "store.log")
    stack = LocalStack(settings, with_gateway=False, restart=None, processes=[service])
    service.start()
    stack.write_manifest()
    sampler = ServerSampler(settings.state_dir, every_s=0.2)
    stop = asyncio.Event()
    running = asyncio.ensure_future(sampler.run(stop))
    try:
        await _samples_until(sampler, 2)
        assert sampler.samples[-1]["store"]["rss_mib"] >= 32
        first_pid = service.pid

        service.stop()
        seen = len(sampler.samples)
        await _samples_until(sampler, seen + 2)
        assert sampler.samples[-1]["store"] == {"cpu_percent": 0.0, "rss_mib": 0.0, "down": True}

        service.start()  # a new pid, which the stack writes to its manifest
        assert service.pid != first_pid
        seen = len(sampler.samples)
        await _samples_until(sampler, seen + 2)
        assert not sampler.samples[-1]["store"].get("down")
        assert sampler.samples[-1]["store"]["rss_mib"] >= 32
    finally:
        stop.set()
        await running
        service.stop()
    summary = sampler.summary()["store"]
    assert summary["down_samples"] >= 2
    assert summary["rss_mib_max"] >= 32
