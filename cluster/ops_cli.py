"""`examday cluster status|validate|render|plan|drain|autoscale`: the operator's commands
(docs/operations.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from infra.progress import add_quiet_flag
from infra.settings import Settings

DEFAULT_CRD = (
    Path(__file__).parents[1] / "tests" / "fixtures" / "kuberay" / "ray.io_rayclusters.yaml"
)


def add_commands(commands: Any) -> None:
    commands.add_parser("status", help="nodes, shards, rooms, media, verifiers on one screen")
    validate = commands.add_parser("validate", help="check cluster/manifests (Ray, KubeRay CRD)")
    validate.add_argument("--crd", type=Path, default=DEFAULT_CRD, help="RayCluster CRD YAML")
    render = commands.add_parser("render", help="one region's Kubernetes manifests, to stdout")
    render.add_argument("--region", required=True, help="cn-north, cn-east, ...")
    render.add_argument("--image-tag", default=None, help="image tag (the project's version)")
    drain = commands.add_parser("drain", help="move everything off a node (id prefix or IP)")
    drain.add_argument("node", help="node id (or a unique prefix) or node IP")
    drain.add_argument("--timeout", type=_positive_float, default=120.0, help="seconds (120)")
    add_quiet_flag(drain)
    autoscale = commands.add_parser(
        "autoscale", help="start the shard controller (room and media shards); show its decisions"
    )
    autoscale.add_argument("--step", action="store_true", help="also decide once, now")
    plan = commands.add_parser("plan", help="nodes and GPUs per node type for N candidates")
    plan.add_argument("--candidates", type=_positive_int, required=True, metavar="N")
    plan.add_argument(
        "--media-share",
        type=_share,
        default=1.0,
        metavar="F",
        help="share of candidates publishing camera/mic (0-1, default 1)",
    )
    plan.add_argument(
        "--sample-every",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds between face checks of one candidate (default 10)",
    )
    plan.add_argument("--viewers-per-stream", type=_non_negative_float, default=1.0)
    plan.add_argument("--heartbeat-every", type=_positive_float, default=5.0)
    plan.add_argument(
        "--heartbeats",
        choices=("socket", "http"),
        default="socket",
        help="how clients beat: the app's presence socket (default) or HTTP POST",
    )
    plan.add_argument("--log-records-per-candidate-s", type=_non_negative_float, default=0.1)
    plan.add_argument(
        "--utilisation",
        type=_share,
        default=0.6,
        help="plan nodes to run at this share of their cores (default 0.6)",
    )
    plan.add_argument("--costs", type=Path, default=None, help="costs file (loadtests/costs.json)")
    plan.add_argument(
        "--write-costs",
        nargs="*",
        metavar="BENCH",
        default=None,
        help="first run these benchmarks (all when none named) and write the costs",
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.cluster_command == "status":
        from cluster import status

        return status.status(settings)
    if args.cluster_command == "validate":
        return _validate(args.crd)
    if args.cluster_command == "render":
        from cluster import regions

        argv = ["render", "--region", args.region]
        return regions.main(argv + (["--image-tag", args.image_tag] if args.image_tag else []))
    if args.cluster_command == "drain":
        from cluster import drain

        return drain.drain(settings, args.node, args.timeout, quiet=args.quiet)
    if args.cluster_command == "autoscale":
        return _autoscale(settings, step=args.step)
    if args.cluster_command == "plan":
        return _plan(args)
    raise AssertionError(args.cluster_command)


def _validate(crd: Path) -> int:
    from cluster import validate

    found = validate.validate_all(crd)
    for name, problems in found.items():
        print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if any(found.values()) else 0


def _plan(args: argparse.Namespace) -> int:
    from cluster import capacity

    if args.utilisation == 0:
        raise SystemExit("--utilisation must be above 0")
    unknown = set(args.write_costs or []) - set(capacity.BENCHMARKS)
    if unknown:
        raise SystemExit(
            f"no benchmark {', '.join(sorted(unknown))}; known: " + ", ".join(capacity.BENCHMARKS)
        )
    assumptions = capacity.Assumptions(
        candidates=args.candidates,
        media_share=args.media_share,
        sample_every_s=args.sample_every,
        heartbeat_every_s=args.heartbeat_every,
        heartbeats=args.heartbeats,
        viewers_per_stream=args.viewers_per_stream,
        log_records_per_candidate_s=args.log_records_per_candidate_s,
        utilisation=args.utilisation,
    )
    try:
        return capacity.main(assumptions, args.costs or capacity.COSTS, args.write_costs)
    except capacity.CostsError as exc:
        raise SystemExit(f"examday cluster plan: {exc}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _autoscale(settings: Settings, *, step: bool) -> int:
    import asyncio

    from cluster import controller
    from infra import raycluster
    from infra import redis as redis_conn
    from infra.telemetry import actor_call

    raycluster.connect(settings)

    async def run() -> None:
        handle = await asyncio.to_thread(controller.get_or_create, settings, run=True)
        await actor_call(handle.start)
        ops = settings.ops
        print(
            f"controller running: every {ops.controller_interval_s:g}s, room shards"
            f" {ops.controller_min_shards}..{ops.controller_max_shards}"
        )
        if step:
            for decision in await actor_call(handle.step):
                print(f"decided now: {decision}")
        redis = redis_conn.connect(settings)
        try:
            for entry in await controller.history(redis):
                print(
                    f"  {entry.get('plane', 'rooms'):<6} {entry['action']:<6}"
                    f" {entry['reason']:<28} shards {entry['shards']:>3}"
                    f"  load {entry.get('load', entry.get('rooms', 0)):>6}"
                )
        finally:
            await redis.aclose()

    asyncio.run(run())
    return 0
