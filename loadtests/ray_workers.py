"""Fleet parts run as Ray tasks, so that a rehearsal scales out over a cluster's nodes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import ray

if TYPE_CHECKING:
    from loadtests.fleet import FleetConfig
    from loadtests.journey import Recorder
    from loadtests.scenario import Assets, Scenario


@ray.remote(num_cpus=1)
def run_part(
    config: FleetConfig, scenario: Scenario, assets: Assets, plan: list[tuple[int, str, bool, bool]]
) -> Recorder:
    from loadtests.fleet import run_candidates

    return asyncio.run(run_candidates(config, scenario, assets, plan))
