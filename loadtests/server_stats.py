"""CPU and memory of the platform's processes, sampled while a fleet runs.

For a local stack (its state directory holds `stack.json`) every service's
process tree is sampled with psutil; elsewhere the summary says it could not
see the servers rather than report zeros.

The manifest is read again at every sample: the stack's supervisor restarts a
dead Redis, SeaweedFS or TURN relay under a new pid and rewrites the manifest,
and a rehearsal that outlives a restart (a chaos run, a crash under load) is
exactly when the servers' figures matter. A service whose process is gone at a
sample is recorded as down (no CPU, no memory) rather than left out, so that a
chart shows the gap and the summary counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import psutil

from infra.stack import named_process, read_manifest

SAMPLE_SECONDS = 2.0
MAX_SAMPLES = 10_000


class ServerSampler:
    def __init__(self, state_dir: Path | None, every_s: float = SAMPLE_SECONDS) -> None:
        self.state_dir = state_dir
        self.every_s = every_s
        self.manifest = read_manifest(state_dir) if state_dir else None
        self.samples: list[dict[str, Any]] = []
        # cpu_percent measures since the previous call on the same Process object: keep them.
        self._known: dict[int, psutil.Process] = {}

    async def run(self, stop: asyncio.Event) -> None:
        if self.manifest is None:
            return
        # psutil reads /proc: off the event loop, which drives the fleet's candidates.
        await asyncio.to_thread(self._measure)  # the first call only starts the measurement
        while not stop.is_set() and len(self.samples) < MAX_SAMPLES:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)
            self.samples.append(await asyncio.to_thread(self._measure))

    def _measure(self) -> dict[str, Any]:
        # A stack that went away keeps its last manifest: its services show as down.
        fresh = read_manifest(self.state_dir) if self.state_dir else None
        manifest = self.manifest = fresh or self.manifest
        sample: dict[str, Any] = {"t": time.time()}
        if manifest is None:
            return sample
        self._known = {pid: p for pid, p in self._known.items() if p.is_running()}
        for name in manifest["services"]:
            root = named_process(manifest, name)
            procs = self._family(root) if root is not None else []
            cpu = rss = 0.0
            for p in procs:
                try:
                    cpu += p.cpu_percent(None)
                    rss += p.memory_info().rss
                except psutil.Error:
                    continue
            value: dict[str, Any] = {"cpu_percent": round(cpu, 1), "rss_mib": round(rss / 2**20, 1)}
            if not procs:
                value["down"] = True
            sample[name] = value
        return sample

    def _family(self, root: psutil.Process) -> list[psutil.Process]:
        """The service's process and its descendants, each measured on the one object."""
        try:
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        return [self._known.setdefault(p.pid, p) for p in members]

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {
                "note": "server processes not visible (not a local stack): no CPU/memory sampled"
            }
        names = list(dict.fromkeys(k for s in self.samples for k in s if k != "t"))
        out: dict[str, Any] = {"samples": len(self.samples)}
        for name in names:
            values = [s[name] for s in self.samples if name in s]
            up = [v for v in values if not v.get("down")]
            measured = up or values  # never up: its zeros
            out[name] = {
                "cpu_percent_mean": round(
                    sum(v["cpu_percent"] for v in measured) / len(measured), 1
                ),
                "cpu_percent_max": max(v["cpu_percent"] for v in measured),
                "rss_mib_max": max(v["rss_mib"] for v in measured),
                # Samples that found the service's process gone (a crash, a restart).
                "down_samples": len(values) - len(up),
            }
        out["cpu_percent_mean_total"] = round(
            sum(v["cpu_percent_mean"] for k, v in out.items() if isinstance(v, dict)), 1
        )
        return out
