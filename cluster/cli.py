"""The `examday` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cluster import commands as cli_commands
from infra.progress import Progress, add_quiet_flag, clock_text, quiet_env, ticking
from infra.settings import Settings
from infra.stack import MAX_LOCAL_NODES
from infra.tokens import STAFF_ROLES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="examday", description="Run a national exam day.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start the embedded platform and stay in the foreground")
    up.add_argument(
        "--nodes",
        type=int,
        choices=range(1, MAX_LOCAL_NODES + 1),
        default=1,
        help="local Ray nodes (127.0.0.2 up)",
    )
    up.add_argument("--demo", action="store_true", help="then run a short simulated exam")
    up.add_argument(
        "--autoscale",
        action="store_true",
        help="media nodes (127.0.0.3, .4) added and removed by Ray's autoscaler, as on KubeRay",
    )
    up.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="with --autoscale: seconds before an idle node is removed (60)",
    )

    names = ", ".join(cli_commands.benchmarks())
    bench = commands.add_parser(
        "bench",
        help=f"run a benchmark: {names} (see `examday bench NAME -h`)",
        description=f"benchmarks: {names}",
    )
    bench.add_argument("name", help=f"the benchmark, one of: {names}")
    add_quiet_flag(bench)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own flags")

    loadtest = commands.add_parser(
        "loadtest", help="rehearse exam day with a simulated fleet (see `examday loadtest -h`)"
    )
    loadtest.add_argument("args", nargs=argparse.REMAINDER, help="the fleet's own flags")

    cluster = commands.add_parser("cluster", help="operate the running cluster")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    shards = cluster_commands.add_parser("shards", help="list, add or remove room shards")
    shards.add_argument("--add", type=int, default=0, metavar="N", help="add N room shards")
    shards.add_argument("--remove", metavar="NAME", help="move a shard's rooms away and stop it")
    # `examday cluster status|validate|plan|drain`: cluster/ops_cli.py.
    from cluster import ops_cli

    ops_cli.add_commands(cluster_commands)

    staff = commands.add_parser("staff", help="staff accounts")
    staff_commands = staff.add_subparsers(dest="staff_command", required=True)
    # The operator's way in: it makes the first admin, who then makes the other accounts
    # through the API (where only an admin makes organisers, admins and release managers).
    staff_add = staff_commands.add_parser(
        "add", help="create a staff account (the first admin, or any other)"
    )
    staff_add.add_argument("--username", required=True)
    staff_add.add_argument("--role", choices=STAFF_ROLES, default="organiser")

    gateway = commands.add_parser(
        "gateway",
        help="serve the gateway in the foreground (what the image and a gateway pod run)",
        description="uvicorn with the gateway's flags and EXAMDAY_* settings, in place of"
        " this process (its signals reach uvicorn directly).",
    )
    gateway.add_argument(
        "--host", help="the address to listen on (default EXAMDAY_GATEWAY_HOST; 0.0.0.0 in a pod)"
    )
    commands.add_parser("down", help="stop a running `examday up`")
    commands.add_parser("status", help="what runs, with health and memory")
    # `examday audit verify`, `examday purge`, `examday keys rotate`: cluster/privacy_cli.py.
    from cluster import privacy_cli

    privacy_cli.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # These pass every flag through to their own parser (argparse's REMAINDER would
    # stop at the first option).
    if words[:1] == ["loadtest"]:
        return cli_commands.run_loadtest(words[1:])
    if words[:1] == ["bench"] and len(words) > 1 and not words[1].startswith("-"):
        return _bench(words[1], words[2:])
    args = build_parser().parse_args(words)
    settings = Settings()
    from cluster import bringup

    if args.command == "up":
        if args.autoscale and args.nodes != 1:
            raise SystemExit("--autoscale starts its nodes itself: no --nodes with it")
        return bringup.up(
            settings,
            nodes=args.nodes,
            demo=args.demo,
            autoscale=args.autoscale,
            idle_timeout_s=args.idle_timeout,
        )
    if args.command == "gateway":
        from infra import services

        argv = services.gateway_argv(settings, args.host)
        os.execv(argv[0], argv)  # noqa: S606 - this process becomes the gateway's uvicorn
    if args.command == "down":
        return bringup.down(settings)
    if args.command == "status":
        return bringup.status(settings)
    if args.command == "cluster" and args.cluster_command == "shards":
        from cluster import shards

        if args.add < 0:
            raise SystemExit("--add takes a positive number")
        return shards.shards(settings, args.add, args.remove)
    if args.command == "cluster" and args.cluster_command != "shards":
        from cluster import ops_cli

        return ops_cli.main(args, settings)
    if args.command == "staff" and args.staff_command == "add":
        from cluster import shards

        return shards.add_staff(settings, args.username, args.role)
    if args.command in ("audit", "purge", "keys"):
        from cluster import privacy_cli

        return privacy_cli.main(args, settings)
    raise AssertionError(args.command)


def _bench(name: str, args: list[str]) -> int:
    # `--quiet` is ours, not the benchmark's (whose parser would refuse it); the
    # environment carries it to the processes a benchmark starts.
    quiet = "--quiet" in args or quiet_env()
    args = [a for a in args if a != "--quiet"]
    with Progress(f"examday bench {name}", quiet=quiet) as progress:
        progress.render = lambda: " ".join(
            part for part in (clock_text(progress.elapsed()), progress.noted) if part
        )
        stop = ticking(progress)
        try:
            return cli_commands.run_benchmark(name, args)
        except cli_commands.NotRegistered:
            progress.close(f"no benchmark {name!r}")
            print(f"examday bench: no benchmark {name!r}", file=sys.stderr)
            return 2
        finally:
            stop.set()


if __name__ == "__main__":
    sys.exit(main())
