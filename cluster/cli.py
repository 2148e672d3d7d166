"""The `examday` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from infra.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="examday", description="Run a national exam day.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start the embedded platform and stay in the foreground")
    up.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="local Ray nodes")
    up.add_argument("--demo", action="store_true", help="then run a short simulated exam")

    commands.add_parser("down", help="stop a running `examday up`")
    commands.add_parser("status", help="what runs, with health and memory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    from cluster import bringup

    if args.command == "up":
        return bringup.up(settings, nodes=args.nodes, demo=args.demo)
    if args.command == "down":
        return bringup.down(settings)
    if args.command == "status":
        return bringup.status(settings)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
