"""What a fleet is asked to do: read by the fleet that plans it and by every share that runs
part of it (in this process, a local process or a Ray task, so it pickles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loadtests.presence import Transport

HEARTBEAT_SECONDS = 5.0


@dataclass(frozen=True)
class FleetConfig:
    target: str
    candidates: int
    media: int
    proctors: int
    ramp: float
    duration: float
    report: Path
    region: str = "cn-north"
    hosts: tuple[str, ...] = ("127.0.0.1",)
    switch_faces: int = 0
    thresholds: tuple[str, ...] = ()
    ray_address: str | None = None
    workers: int = 2
    processes: int = 1
    organiser: str = ""
    password: str = ""
    state_dir: Path | None = None
    heartbeat_every: float = HEARTBEAT_SECONDS
    heartbeats: Transport = "socket"
    setup_only: bool = False
    # Behaviour -> fraction of the candidates it applies to (loadtests.behaviours)
    behaviours: dict[str, float] = field(default_factory=dict)
    switch_hosts: tuple[str, ...] = ("127.0.0.5",)  # where a `network_switch` moves to
    worker_cpus: float = 1.0  # CPUs a Ray worker of the fleet asks for
    lag_limit: float = 0.25  # seconds of loop lag (p99) that flag a generator share
    # For the tests only: this share's loop is blocked now and then (loadtests.parts._stall),
    # so that the report's flag for a lagging generator is seen to work.
    stall_worker: int | None = None
