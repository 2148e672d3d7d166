"""CPU and memory of the platform's processes, sampled while a fleet runs.

For a local stack (its state directory holds `stack.json`) every service's
process tree is sampled with psutil; elsewhere the summary says it could not
see the servers rather than report zeros.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import psutil

from infra.stack import read_manifest

SAMPLE_SECONDS = 2.0
MAX_SAMPLES = 10_000


class ServerSampler:
    def __init__(self, state_dir: Path | None) -> None:
        manifest = read_manifest(state_dir) if state_dir else None
        self.services: dict[str, int] = dict(manifest["services"]) if manifest else {}
        self.samples: list[dict[str, Any]] = []
        # cpu_percent measures since the previous call on the same Process object: keep them.
        self._known: dict[int, psutil.Process] = {}

    async def run(self, stop: asyncio.Event) -> None:
        if not self.services:
            return
        roots = {
            name: psutil.Process(pid)
            for name, pid in self.services.items()
            if psutil.pid_exists(pid)
        }
        for proc in self._family(roots).values():
            for p in proc:
                p.cpu_percent(None)  # the first call only starts the measurement
        while not stop.is_set() and len(self.samples) < MAX_SAMPLES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
            sample: dict[str, Any] = {"t": time.time()}
            for name, procs in self._family(roots).items():
                cpu = rss = 0.0
                for p in procs:
                    try:
                        cpu += p.cpu_percent(None)
                        rss += p.memory_info().rss
                    except psutil.Error:
                        continue
                sample[name] = {"cpu_percent": round(cpu, 1), "rss_mib": round(rss / 2**20, 1)}
            self.samples.append(sample)

    def _family(self, roots: dict[str, psutil.Process]) -> dict[str, list[psutil.Process]]:
        family = {}
        for name, root in roots.items():
            try:
                members = [root, *root.children(recursive=True)]
            except psutil.Error:
                members = []
            family[name] = [self._known.setdefault(p.pid, p) for p in members]
        return family

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {
                "note": "server processes not visible (not a local stack): no CPU/memory sampled"
            }
        names = [k for k in self.samples[-1] if k != "t"]
        out: dict[str, Any] = {"samples": len(self.samples)}
        for name in names:
            cpu = [s[name]["cpu_percent"] for s in self.samples if name in s]
            rss = [s[name]["rss_mib"] for s in self.samples if name in s]
            out[name] = {
                "cpu_percent_mean": round(sum(cpu) / len(cpu), 1),
                "cpu_percent_max": max(cpu),
                "rss_mib_max": max(rss),
            }
        out["cpu_percent_mean_total"] = round(
            sum(v["cpu_percent_mean"] for k, v in out.items() if isinstance(v, dict)), 1
        )
        return out
