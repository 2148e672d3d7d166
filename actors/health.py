"""A tiny actor that proves the Ray cluster schedules work: /readyz asks it."""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from core.process_services import open_process
from infra.priority import Priority
from infra.settings import Settings
from infra.telemetry import traced

HEALTH_ACTOR_NAME = "examday-health"


@ray.remote(num_cpus=0, max_restarts=-1)
class HealthProbe:
    def __init__(self, settings: Settings) -> None:
        open_process(settings, "health", priority=Priority.LIVE)

    @traced
    def ping(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "time": time.time(),
        }


def get_or_create(settings: Settings) -> Any:
    return HealthProbe.options(  # type: ignore[attr-defined]
        name=HEALTH_ACTOR_NAME,
        namespace=settings.ray_namespace,
        get_if_exists=True,
        lifetime="detached",
    ).remote(settings)
