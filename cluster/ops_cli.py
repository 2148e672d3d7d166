"""`examday cluster status|validate|plan|drain`: the operator's commands (docs/operations.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from infra.settings import Settings

DEFAULT_CRD = (
    Path(__file__).parents[1] / "tests" / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"
)


def add_commands(commands: Any) -> None:
    commands.add_parser("status", help="nodes, shards, rooms, media, verifiers on one screen")
    validate = commands.add_parser("validate", help="check cluster/manifests (Ray, KubeRay CRD)")
    validate.add_argument("--crd", type=Path, default=DEFAULT_CRD, help="RayCluster CRD YAML")


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.cluster_command == "status":
        from cluster import status

        return status.status(settings)
    if args.cluster_command == "validate":
        return _validate(args.crd)
    raise AssertionError(args.cluster_command)


def _validate(crd: Path) -> int:
    from cluster import validate

    found = validate.validate_all(crd)
    for name, problems in found.items():
        print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if any(found.values()) else 0
