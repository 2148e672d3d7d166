"""`examday cluster plan`: nodes and GPUs per node type for an exam day of N candidates.

Per-core costs come from `loadtests/costs.json`, which `examday cluster plan
--write-costs` writes by running the benchmarks (each in its own process, `--json`)
on this machine; node shapes come from the launcher manifest. Nothing here is a
hand-typed throughput: the only constants are the assumptions the operator sees
printed (and may change by flag).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from cluster import validate

COSTS = Path(__file__).parents[1] / "loadtests" / "costs.json"
COSTS_VERSION = 1
# benchmark -> (its flags for a short run, how a per-core figure is read from its JSON)
BENCHMARKS: dict[str, list[str]] = {
    "media": ["--seconds", "6", "--viewers", "10"],
    "gateway": ["--seconds", "6"],
    "ingest": ["--seconds", "5", "--warmup", "2"],
    "face": ["--seconds", "6", "--batch-sizes", "1,8", "--replicas", "2"],
}


class CostsError(Exception):
    """The costs file is missing, of another version, or lacks a figure."""


def _per_core(name: str, report: dict[str, Any], cores: int) -> dict[str, float]:
    """The per-core figures one benchmark's JSON gives (whole-machine rates / cores)."""
    if name == "media":
        return {"media_streams_per_core": float(report["forwarded_streams_per_core"])}
    if name == "gateway":
        return {
            "heartbeats_per_s_per_core": report["heartbeat"]["req_per_s"] / cores,
            "presence_heartbeats_per_s_per_core": report["heartbeat_socket"]["req_per_s"] / cores,
        }
    if name == "ingest":
        rate = report["gateway_acknowledged_records_per_s"]
        return {"log_records_per_s_per_core": rate / cores}
    if name == "face":
        return {"face_frames_per_s_per_core": report["capacity"]["service_faces_per_s_per_core"]}
    raise CostsError(f"no reading of benchmark {name!r}")


def run_benchmark(name: str, timeout_s: float = 900) -> dict[str, Any]:
    argv = [sys.executable, "-m", "cluster.cli", "bench", name, "--json", *BENCHMARKS[name]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise CostsError(f"bench {name} failed ({done.returncode}): {done.stderr[-2000:]}")
    start = done.stdout.index("{")
    report: dict[str, Any] = json.loads(done.stdout[start:])
    return report


def write_costs(path: Path, names: list[str]) -> dict[str, Any]:
    """Run the benchmarks `names` and merge their per-core figures into `path`."""
    cores = os.cpu_count() or 1
    document: dict[str, Any] = (
        read_costs(path) if path.exists() else {"version": COSTS_VERSION, "costs": {}}
    )
    for name in names:
        started = time.time()
        figures = _per_core(name, run_benchmark(name), cores)
        for key, value in figures.items():
            document["costs"][key] = {
                "value": round(value, 3),
                "benchmark": f"examday bench {name} {' '.join(BENCHMARKS[name])}",
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "machine": {
                    "cpu_count": cores,
                    "cpu": platform.processor() or platform.machine(),
                    # Shared machines: the load next to the benchmark is part of its figure.
                    "load_average_1m": round(os.getloadavg()[0], 1),
                },
            }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return document


def read_costs(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CostsError(f"{path} is missing: run `examday cluster plan --write-costs`")
    document: dict[str, Any] = json.loads(path.read_text())
    if document.get("version") != COSTS_VERSION:
        raise CostsError(f"{path}: version {document.get('version')}, expected {COSTS_VERSION}")
    return document


@dataclass(frozen=True)
class Assumptions:
    candidates: int
    media_share: float  # candidates publishing camera/mic
    sample_every_s: float  # one face check per publishing candidate this often
    heartbeat_every_s: float = 5.0  # the client's heartbeat (loadtests/config.py)
    # How clients beat: the app on its presence socket, or by HTTP POST (4x the cost).
    heartbeats: Literal["socket", "http"] = "socket"
    viewers_per_stream: float = 1.0  # proctor tiles watching each published stream
    log_records_per_candidate_s: float = 0.1
    utilisation: float = 0.6  # headroom: plan nodes to run at this share of their cores


@dataclass(frozen=True)
class NodePlan:
    node_type: str
    cores_needed: float
    nodes: int
    gpus: int
    min_workers: int
    max_workers: int

    @property
    def within_max(self) -> bool:
        return self.nodes <= self.max_workers


def cores_needed(costs: dict[str, Any], a: Assumptions) -> dict[str, float]:
    """CPU cores each part of the work needs at 100 %, from the measured per-core costs."""

    def cost(key: str) -> float:
        try:
            return float(costs["costs"][key]["value"])
        except KeyError:
            raise CostsError(f"costs file lacks {key}: run `--write-costs`") from None

    publishing = a.candidates * a.media_share
    beat = "presence_heartbeats" if a.heartbeats == "socket" else "heartbeats"
    return {
        "gateway+rooms": a.candidates / a.heartbeat_every_s / cost(f"{beat}_per_s_per_core"),
        "media": publishing * (1 + a.viewers_per_stream) / cost("media_streams_per_core"),
        "ingest": a.candidates * a.log_records_per_candidate_s / cost("log_records_per_s_per_core"),
        "face": publishing / a.sample_every_s / cost("face_frames_per_s_per_core"),
    }


def plan(costs: dict[str, Any], launcher: dict[str, Any], a: Assumptions) -> list[NodePlan]:
    """Worker nodes per launcher node type; face work goes to the type offering `face`."""
    need = cores_needed(costs, a)
    types = launcher["available_node_types"]
    plans = []
    for name, node in types.items():
        if name == launcher["head_node_type"]:
            continue
        res = node["resources"]
        cores = 0.0
        if "room_shard" in res:
            cores += need["gateway+rooms"]
        if "media" in res:
            cores += need["media"]
        if "ingest" in res:
            cores += need["ingest"]
        if validate.GPU_RESOURCE in res:
            # Measured on CPU cores; a GPU node runs at least as fast as its CPUs.
            cores += need["face"]
        count = max(math.ceil(cores / (res.get("CPU", 1) * a.utilisation)), node["min_workers"])
        plans.append(
            NodePlan(
                name,
                round(cores, 2),
                count,
                count * int(res.get("GPU", 0)),
                node["min_workers"],
                node["max_workers"],
            )
        )
    return plans


def report(costs: dict[str, Any], plans: list[NodePlan], a: Assumptions) -> str:
    lines = ["assumptions:"]
    lines += [f"  {key} = {value}" for key, value in asdict(a).items()]
    lines.append("measured costs (loadtests/costs.json):")
    for key, cost in sorted(costs["costs"].items()):
        machine = cost["machine"]
        lines.append(
            f"  {key} = {cost['value']}  ({cost['benchmark']}, {cost['measured_at']},"
            f" {machine['cpu_count']} cores)"
        )
    lines.append("cores needed at 100 %:")
    lines += [f"  {k:<14} {v:10.2f}" for k, v in cores_needed(costs, a).items()]
    lines.append("nodes:")
    for p in plans:
        flag = "" if p.within_max else f"  ABOVE max_workers {p.max_workers}"
        lines.append(
            f"  {p.node_type:<12} {p.nodes:>5} nodes  {p.gpus:>4} GPUs"
            f"  ({p.cores_needed} cores of work){flag}"
        )
    lines.append(
        "  face work is sized on CPU cores (no GPU benchmark in costs.json): an upper bound"
    )
    return "\n".join(lines)


def main(a: Assumptions, costs_path: Path, write: list[str] | None) -> int:
    if write is not None:
        write_costs(costs_path, write or list(BENCHMARKS))
    costs = read_costs(costs_path)
    launcher = validate.load_yaml(validate.LAUNCHER)
    plans = plan(costs, launcher, a)
    print(report(costs, plans, a))
    return 0 if all(p.within_max for p in plans) else 1
