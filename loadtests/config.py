"""What a fleet is asked to do: read by the fleet that plans it and by every share that runs
part of it (in this process, a local process or a Ray task, so it pickles).
"""

from __future__ import annotations

from dataclasses import dataclass
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
