"""`examday audit verify`, `examday purge` and `examday keys rotate`.

examday audit verify [--region R]    every entry of the region's audit chain hashes to
                                     itself, carries a valid Ed25519 signature, names its
                                     predecessor and is the only, COMPLIANCE-locked
                                     version of its key; the last one is the signed head;
                                     every object version a receipt names is really gone
                                     from the bucket. Each failure is printed by kind.
examday purge --exam ID | --region R delete everything of an exam (or of every exam of
                                     a region, and its anonymous logs) that no legal
                                     hold protects, with receipts
examday keys rotate                  re-wrap every exam's data keys under the current
                                     master key (the replaced key stays in
                                     EXAMDAY_DATA_MASTER_KEYS_PREVIOUS until this ran)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from actors.privacy import retention
from actors.privacy.audit import verify_region
from core.process_services import open_process
from infra import raycluster
from infra.audit import ChainReport, Failure
from infra.errors import ExamdayError
from infra.keyring import rotate_all
from infra.progress import Progress, add_quiet_flag, clock_text
from infra.settings import Settings
from infra.telemetry import actor_call

PROGRESS_POLL_S = 1.0


def add_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="check the hash-chained audit log of a region")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_commands.add_parser(
        "verify", help="verify the chain and that receipted objects are gone"
    )
    verify.add_argument("--region", help="one region (default: every configured region)")
    purge = commands.add_parser(
        "purge", help="delete all data of an exam or a region not under a hold"
    )
    target = purge.add_mutually_exclusive_group(required=True)
    target.add_argument("--exam", help="the exam id")
    target.add_argument("--region", help="the region")
    add_quiet_flag(purge)
    keys = commands.add_parser("keys", help="master-key rotation")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_commands.add_parser("rotate", help="re-wrap every data key under the current master key")


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "audit":
        reports = asyncio.run(verify_regions(settings, args.region))
        for report in reports:
            state = "ok" if report.ok else "FAILED"
            print(f"{report.region}: {state}, {report.head} entries")
            for failure in report.failures:
                print(f"  {failure.kind}: {failure.detail}")
        return 0 if all(r.ok for r in reports) else 1
    if args.command == "purge":
        raycluster.connect(settings)
        try:
            with Progress("examday purge", quiet=args.quiet) as progress:
                summary = asyncio.run(
                    purge(settings, exam=args.exam, region=args.region, progress=progress)
                )
        except ExamdayError as exc:
            print(f"examday purge: {exc.detail} ({exc.reason})", file=sys.stderr)
            return 2
        print(json.dumps(summary, indent=2, default=str))
        return 0 if not summary.get("failed_groups") else 1
    if args.command == "keys":
        rotated = asyncio.run(rotate_keys(settings))
        print(f"re-wrapped {rotated['data_keys']} data keys of {rotated['exams']} exams")
        return 0
    raise AssertionError(args.command)


async def verify_regions(settings: Settings, region: str | None = None) -> list[ChainReport]:
    if region is not None and region not in settings.regions:
        print(f"examday audit verify: unknown region {region!r}", file=sys.stderr)
        return [
            ChainReport(region, 0, [], [Failure("unknown_region", f"unknown region {region!r}")])
        ]
    process = open_process(settings, None)
    try:
        return [
            await verify_region(process.regional, name)
            for name in ([region] if region else list(settings.regions))
        ]
    finally:
        await process.close()


async def purge(
    settings: Settings,
    *,
    exam: str | None,
    region: str | None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    process = open_process(settings, None)
    try:
        if exam is not None:
            region = await process.regional.region_of(exam)
        if region is None or region not in settings.regions:
            return {"error": f"unknown region {region!r}", "failed_groups": ["-"]}
        handle = await asyncio.to_thread(retention.get_or_create, settings, region)
        running = asyncio.ensure_future(actor_call(handle.run, [exam] if exam else None, "purge"))
        if progress is not None and progress.enabled:  # no polling for a line not drawn
            await _follow_purge(progress, handle, region, running)
        summary: dict[str, Any] = await running
        return summary
    finally:
        await process.close()


async def _follow_purge(
    progress: Progress, handle: Any, region: str, running: asyncio.Future[Any]
) -> None:
    """Ask the region's retention actor how far its run is, once a second, until it ends:
    its run state in Redis counts what it planned and what it deleted."""
    while not running.done():
        state: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # the line is a courtesy: never fail the purge
            state = await asyncio.wait_for(actor_call(handle.progress), PROGRESS_POLL_S)
        if state.get("run"):
            counts = f"{state.get('deleted', 0)} of {state.get('planned', '?')} objects deleted"
        else:
            counts = "planning"
        progress.update(f"{region}: {counts}, {clock_text(progress.elapsed())}")
        await asyncio.wait({running}, timeout=PROGRESS_POLL_S)


async def rotate_keys(settings: Settings) -> dict[str, int]:
    process = open_process(settings, None)
    try:
        report = await rotate_all(process.keys, process.redis)
        return {"exams": report.exams, "data_keys": report.data_keys}
    finally:
        await process.close()
