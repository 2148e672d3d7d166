"""An embedded examday: every service as a supervised child of one process.

`LocalStack.start()` brings up Redis, SeaweedFS, the Ray head (and a second
Ray node), then the gateway, each checked healthy before the next depends on
it; `stop()` ends them in reverse order. A manifest in the state directory
lets `examday status` and `examday down` find a running stack.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import services
from infra.objectstore import ObjectStores
from infra.processes import ManagedProcess, free_port, free_port_block, port_open
from infra.settings import RegionStore, Settings, settings_to_env

MANIFEST_NAME = "stack.json"


@dataclass
class LocalStack:
    settings: Settings
    nodes: int = 1
    with_gateway: bool = True
    appendonly: bool = False
    processes: list[ManagedProcess] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        started = time.monotonic()
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            redis = self._launch(services.redis_process(self.settings, appendonly=self.appendonly))
            weed = self._launch(services.seaweed_process(self.settings))
            head = self._launch(services.ray_node_process(self.settings, head=True))
            self._wait(redis, lambda: services.redis_healthy(self.settings), 20, started)
            self._wait(weed, lambda: services.seaweed_healthy(self.settings), 60, started)
            ObjectStores(self.settings).ensure_buckets()
            self._wait(head, self._head_healthy, 60, started)
            for index in range(1, self.nodes):
                worker = self._launch(
                    services.ray_node_process(self.settings, head=False, index=index)
                )
                self._wait(worker, lambda i=index: self._worker_healthy(i), 60, started)
            if self.with_gateway:
                env = {**os.environ, **settings_to_env(self.settings)}
                gateway = self._launch(services.gateway_process(self.settings, env))
                self._wait(gateway, lambda: services.gateway_healthy(self.settings), 90, started)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        self.write_manifest()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.manifest_path.unlink(missing_ok=True)

    def _launch(self, process: ManagedProcess) -> ManagedProcess:
        process.start()
        self.processes.append(process)
        return process

    def _wait(self, process: ManagedProcess, check: Any, timeout: float, since: float) -> None:
        process.wait_healthy(check, timeout)
        self.timings[process.name] = round(time.monotonic() - since, 2)

    def _head_healthy(self) -> bool:
        return port_open(self.settings.ray_head_ip, self.settings.ray_gcs_port)

    def _worker_healthy(self, index: int) -> bool:
        port = self.settings.ray_port_base + index * 200 + 1
        return port_open(self.settings.ray_worker_ip, port)

    @property
    def manifest_path(self) -> Path:
        return self.settings.state_dir / MANIFEST_NAME

    def write_manifest(self) -> None:
        manifest = {
            "supervisor_pid": os.getpid(),
            "state_dir": str(self.settings.state_dir.resolve()),
            "gateway_url": self.settings.gateway_url if self.with_gateway else None,
            "redis_url": self.settings.redis_url,
            "s3_endpoint": f"http://127.0.0.1:{self.settings.s3_port}",
            "ray_address": self.settings.ray_head_address,
            "services": {p.name: p.pid for p in self.processes},
            "started_at": time.time(),
        }
        self.manifest_path.write_text(json.dumps(manifest, indent=2))


def read_manifest(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / MANIFEST_NAME
    if not path.exists():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def isolated_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings for a private stack on random loopback ports (tests, benchmarks, fleets).

    The port blocks are taken below Linux's ephemeral range (32768-60999), where
    outgoing connections of a busy machine would otherwise take them first.
    """
    s3_port = free_port_block(8, 20000, 22700, also_offset=10000)
    redis_port = free_port()
    regions = {
        name: RegionStore(endpoint=f"http://127.0.0.1:{s3_port}", bucket=f"examday-{name}")
        for name in ("cn-north", "cn-east")
    }
    values: dict[str, object] = {
        "env": "test",
        "state_dir": state_dir,
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "regions": regions,
        "s3_port": s3_port,
        "ray_gcs_port": free_port(),
        "ray_port_base": free_port_block(420, 10000, 19900),
        "ray_node_memory_bytes": 3 * 1024**3,
        "ray_object_store_bytes": 256 * 1024**2,
        "gateway_port": free_port(),
        "trace_file": state_dir / "spans.jsonl",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
