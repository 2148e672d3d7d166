"""`examday loadtest`: a simulated candidate fleet against a running platform.

Candidates arrive within `--ramp` seconds (the login storm at exam start), stay
`--duration` seconds heartbeating (`--media` of them also publish a camera
showing a real face, and `--switch-faces` of those switch to another person to
provoke incidents), then leave. `--proctors` proctors, one room each, follow the
room event stream and watch every camera of their room by WHEP; the media
candidates are spread over the proctors' rooms, so every camera is watched.
With `--ray ADDRESS --workers N` the candidates, cameras included, are spread over N Ray
workers of that cluster, which start together; `--processes N` spreads them over local
processes. Each share's loop lag and CPU are reported, and a share that lagged is
flagged. `--screen-share 0.1` and the other behaviour flags give a fraction of the
fleet what real candidates do besides sitting still (loadtests.behaviours).
The report goes to `--report DIR` (report.html, drawn from the run's summary.json,
steps.csv and series.json); `examday loadtest compare RUN_A RUN_B` sets two runs side
by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from infra.progress import Progress, add_quiet_flag, clock_text, follow
from loadtests import charts, webrtc
from loadtests import report as reports
from loadtests.behaviours import BEHAVIOURS, flag
from loadtests.behaviours import deal as deal_behaviours
from loadtests.config import FleetConfig
from loadtests.journey import Proctor, Recorder
from loadtests.parts import Plan, http_session, run_shares
from loadtests.presence import TRANSPORTS
from loadtests.scenario import (
    Scenario,
    build_assets,
    candidate_ids,
    create_exam,
    enrol_faces,
    organiser_session,
)
from loadtests.server_stats import ServerSampler
from loadtests.tally import Tallies

ARRIVAL_SEED = 2026


def _candidates(
    config: FleetConfig, scenario: Scenario
) -> list[tuple[str, bool, bool, tuple[str, ...]]]:
    """(number, with media, switches face, behaviours): media spread round robin over the
    rooms that have a proctor (so that every camera is watched), or over all rooms."""
    numbers = [n for room in scenario.rooms.values() for n in room]
    by_room = list(scenario.rooms.values())[: config.proctors or None]
    media: list[str] = []
    for i in range(max(len(r) for r in by_room)):
        media += [room[i] for room in by_room if i < len(room)]
    chosen = set(media[: config.media])
    switching = set(media[: config.switch_faces])
    # Arrival order is random, as on exam morning (seeded: runs compare): otherwise the
    # media candidates of the first rooms would all arrive in the first seconds.
    random.Random(ARRIVAL_SEED).shuffle(numbers)
    behaviours = deal_behaviours(config.behaviours, numbers, chosen)
    return [(n, n in chosen, n in switching, behaviours.get(n, ())) for n in numbers]


async def _proctors(
    config: FleetConfig,
    scenario: Scenario,
    plan: Plan,
    recorder: Recorder,
    cids: dict[str, str],
    clips: webrtc.Clips,
) -> list[Proctor]:
    rooms = list(scenario.rooms)[: config.proctors]
    media = {n for _, n, m, _, _ in plan if m}
    listening = {n for _, n, _, _, b in plan if "talkback" in b}
    proctors = []
    for room in rooms:
        username, password = scenario.proctors[room]
        watch = [cids[n] for n in scenario.rooms[room] if n in media and n in cids]
        proctor = Proctor(room, username, password, scenario, recorder, watch)
        if listening.intersection(scenario.rooms[room]):
            proctor.talkback = clips
        proctors.append(proctor)
    return proctors


def progress_line(
    config: FleetConfig,
    proctors: Sequence[Proctor],
    recorder: Recorder,
    since: float,
    tallies: Tallies,
) -> str:
    """What this process sees while the shares run: the shares' live counts
    (`loadtests.tally`: candidates arrived and in rooms, steps, errors, the worst generator
    lag), and through the proctors' eyes the watched candidates in their rooms and the
    cameras live. Arrivals are the shares' own count, not the schedule's: local processes
    and Ray workers begin it seconds after this process starts the clock."""
    elapsed = time.monotonic() - since
    arrived = tallies.arrived()
    seen = sum(sum(e.is_set() for e in p.present.values()) for p in proctors)
    live = sum(len(p.sessions) for p in proctors)
    watched = sum(len(p.watch) for p in proctors)
    errors = sum(1 for step in recorder.steps if not step.ok)
    total = config.ramp + config.duration
    words = [f"arrived {arrived:,}/{config.candidates:,}", tallies.text()]
    if proctors:
        words.append(
            f"proctors see {seen}/{watched} watched in rooms, cameras live {live}/{watched},"
            f" proctor errors {errors}"
        )
    words.append(f"{clock_text(elapsed)} of {clock_text(total)}")
    return ", ".join(word for word in words if word)


async def run_fleet(
    config: FleetConfig, progress: Progress | None = None
) -> tuple[dict[str, Any], list[str]]:
    assets = build_assets(liveness=config.media > 0)
    async with http_session(config.target, 20) as http:
        organiser = await organiser_session(http, config.organiser, config.password)
        scenario = await create_exam(
            http, organiser, config.candidates, region=config.region, hosts=config.hosts
        )
        plan = [(i, n, m, s, b) for i, (n, m, s, b) in enumerate(_candidates(config, scenario))]
        # Cameras are watched by id; a face check (passed or failed) needs a face enrolled.
        faced = {n for _, n, m, _, b in plan if m or "face_fail" in b}
        cids = await candidate_ids(http, organiser, scenario, faced)
        await enrol_faces(http, organiser, scenario, list(cids.values()), assets.enrol_jpeg)
    recorder = Recorder()
    stop = asyncio.Event()
    sampler = ServerSampler(config.state_dir)
    began, cpu_before = time.monotonic(), _generator_cpu_s()
    sampling = asyncio.ensure_future(sampler.run(stop))
    async with http_session(config.target, config.proctors + 4, recorder) as http:
        proctors = await _proctors(config, scenario, plan, recorder, cids, assets.clips)
        watching = [asyncio.ensure_future(p.run(http, config.duration, stop)) for p in proctors]
        following, tallies = None, Tallies()
        if progress is not None:
            since = time.monotonic()
            progress.render = lambda: progress_line(config, proctors, recorder, since, tallies)
            following = asyncio.ensure_future(follow(progress, stop))
        parts = await run_shares(config, scenario, assets, plan, tallies)
        stop.set()
        await asyncio.gather(*watching)
        if following is not None:
            await following
    await sampling
    generator_cpu_s = _generator_cpu_s() - cpu_before
    wall_s = time.monotonic() - began
    ended = time.time() - recorder.epoch
    merge(recorder, parts)
    expected_tracks = sum(len(p.watch) for p in proctors)
    summary = reports.summarise(
        recorder, expected_tracks, sampler.summary(), lag_limit=config.lag_limit
    )
    summary["generator"].update(
        cpu_seconds=round(generator_cpu_s, 1),
        cpu_percent_mean=round(100 * generator_cpu_s / max(wall_s, 1e-9), 1),
    )
    summary["fleet"] = {
        "candidates": config.candidates, "media": config.media, "proctors": config.proctors,
        "ramp_s": config.ramp, "duration_s": config.duration, "exam": scenario.exam_id,
        "ray": config.ray_address, "processes": config.processes,
        "workers": config.workers if config.ray_address else None,
        "behaviours": dict(config.behaviours),
    }  # fmt: skip
    summary["run"] = {
        "name": config.report.name, "started_at": recorder.epoch, "start_s": 0.0,
        "end_s": round(ended, 3), "thresholds": list(config.thresholds),
    }  # fmt: skip
    broken = reports.check(summary, list(config.thresholds))
    summary["broken"] = broken
    reports.write(config.report, recorder, summary, sampler.samples)
    charts.write_report(config.report)
    return summary, broken


def merge(recorder: Recorder, parts: Sequence[Recorder]) -> None:
    """The shares' records into the fleet's, on its clock: a share counts time from its own
    epoch, and its candidates-in-rooms count is its own, so the fleet's is their sum."""
    changes: list[tuple[float, int]] = []
    for part in parts:
        shift = part.epoch - recorder.epoch
        recorder.steps += [replace(step, start=step.start + shift) for step in part.steps]
        previous = 0
        for t, online in part.online:
            changes.append((t + shift, online - previous))
            previous = online
        recorder.incidents_expected.update(part.incidents_expected)
        recorder.busy_retries.update(part.busy_retries)
        recorder.connections_lost.update(part.connections_lost)
        recorder.loop_lag += part.loop_lag
        recorder.behaviours.merge(part.behaviours)
        recorder.shares.append((part.share, part.loop_lag))
    total, recorder.online = 0, []
    for t, delta in sorted(changes):
        total += delta
        recorder.online.append((t, total))


def _generator_cpu_s() -> float:
    """CPU time of this process and of the generator processes it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="examday loadtest", description=__doc__)
    parser.add_argument("--candidates", type=int, required=True, help="simulated candidates")
    parser.add_argument("--media", type=int, default=0, help="of them, publishing camera+audio")
    parser.add_argument("--proctors", type=int, default=1, help="proctors, one room each")
    parser.add_argument("--ramp", type=float, default=30.0, help="seconds over which they arrive")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds each stays in the room"
    )
    parser.add_argument("--target", default="http://127.0.0.1:8000", help="the gateway's URL")
    parser.add_argument(
        "--report", type=Path, default=Path("reports/loadtest"), help="report folder"
    )
    parser.add_argument("--region", default="cn-north", help="region of the rehearsal exam")
    parser.add_argument(
        "--switch-faces", type=int, default=0, help="media candidates who switch face"
    )
    parser.add_argument("--threshold", action="append", default=[], help="e.g. 'login.p99 < 1s'")
    parser.add_argument("--thresholds-file", type=Path, help="one threshold a line")
    parser.add_argument("--ray", dest="ray_address", help="spread candidates over this Ray cluster")
    parser.add_argument(
        "--workers", type=int, default=2,
        help="Ray workers with --ray (each an actor on the next node in turn, cameras dealt too)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-cpus", type=float, default=1.0, help="CPUs each Ray worker asks for"
    )
    parser.add_argument(
        "--lag-limit", type=float, default=0.25,
        help="seconds of loop lag (p99) that flag a generator worker or process as lagging",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=1,
        help="local generator processes; from 2, media candidates get one of their own",
    )  # fmt: skip
    parser.add_argument("--organiser", default=os.environ.get("EXAMDAY_LOADTEST_ORGANISER", ""))
    parser.add_argument(
        "--ice-host", action="append", default=[], help="local ICE address (loopback)"
    )
    parser.add_argument(
        "--state-dir", type=Path, help="a local stack's state dir, to sample its CPU/RSS"
    )
    parser.add_argument(
        "--heartbeats", choices=TRANSPORTS, default="socket",
        help="heartbeats over the presence socket, as the app sends them, or by HTTP POST",
    )  # fmt: skip
    parser.add_argument(
        "--switch-host", action="append", default=[],
        help="loopback address a --network-switch candidate moves to (default 127.0.0.5)",
    )  # fmt: skip
    behaviours = parser.add_argument_group(
        "behaviours", "each a fraction (0..1) of the candidates it applies to"
    )
    for name, (text, _media) in BEHAVIOURS.items():
        behaviours.add_argument(
            flag(name), dest=name, type=float, default=0.0, metavar="FRACTION", help=text
        )
    parser.add_argument(
        "--setup-only", action="store_true", help="create the exam, print it, and stop (for Locust)"
    )
    add_quiet_flag(parser)
    return parser


def config_from_args(argv: Sequence[str] | None) -> FleetConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.candidates < 1 or not 0 <= args.media <= args.candidates:
        parser.error("--candidates must be >= 1 and 0 <= --media <= --candidates")
    if args.proctors < 0 or args.ramp < 0 or args.duration <= 0:
        parser.error("--proctors and --ramp must be >= 0, --duration > 0")
    if not 1 <= args.workers <= 256 or not 1 <= args.processes <= 64:
        parser.error("--workers must be 1..256 and --processes 1..64")
    if not 0 <= args.switch_faces <= args.media:
        parser.error("--switch-faces must be between 0 and --media")
    fractions = {name: getattr(args, name) for name in BEHAVIOURS if getattr(args, name)}
    for name, fraction in fractions.items():
        if not 0 <= fraction <= 1:
            parser.error(f"{flag(name)} must be a fraction between 0 and 1")
        if BEHAVIOURS[name][1] and args.media == 0:
            parser.error(f"{flag(name)} applies to media candidates: give --media too")
    if fractions.get("talkback") and args.proctors == 0:
        parser.error("--talkback needs a proctor to talk: give --proctors")
    if not 0 < args.worker_cpus <= 64 or args.lag_limit <= 0:
        parser.error("--worker-cpus must be in (0, 64] and --lag-limit > 0")
    thresholds = list(args.threshold)
    if args.thresholds_file:
        thresholds += [t for t in args.thresholds_file.read_text().splitlines() if t.strip()]
    try:
        for text in thresholds:
            reports.parse_threshold(text)
    except reports.BadThreshold as exc:
        parser.error(str(exc))
    password = os.environ.get("EXAMDAY_LOADTEST_PASSWORD", "")

    if not args.organiser or not password:
        parser.error(
            "set --organiser (or EXAMDAY_LOADTEST_ORGANISER) and EXAMDAY_LOADTEST_PASSWORD"
        )
    return FleetConfig(
        target=args.target, candidates=args.candidates, media=args.media, proctors=args.proctors,
        ramp=args.ramp, duration=args.duration, report=args.report, region=args.region,
        hosts=tuple(args.ice_host or ["127.0.0.1"]), switch_faces=args.switch_faces,
        thresholds=tuple(thresholds), ray_address=args.ray_address, workers=args.workers,
        processes=args.processes, organiser=args.organiser, password=password,
        state_dir=args.state_dir, heartbeats=args.heartbeats, setup_only=args.setup_only,
        behaviours=fractions, switch_hosts=tuple(args.switch_host or ["127.0.0.5"]),
        worker_cpus=args.worker_cpus, lag_limit=args.lag_limit,
    )  # fmt: skip


def print_summary(summary: dict[str, Any], broken: list[str], report: Path) -> None:
    print("step                count  errors   p50 ms   p95 ms   p99 ms")
    for name, s in summary["steps"].items():
        cells = [f"{(s[q] or 0) * 1000:8.1f}" for q in ("p50", "p95", "p99")]
        print(f"{name:<18} {s['count']:>6} {s['errors']:>7} {' '.join(cells)}")
    tracks, incidents = summary["tracks"], summary["incidents"]
    print(
        f"tracks expected {tracks['expected']}, received {tracks['received']},"
        f" missing {tracks['missing']}"
    )
    print(f"incidents expected {incidents['expected']}, raised {incidents['raised']}")
    if summary["media_connections_lost"]:
        print(f"camera connections lost mid-exam: {summary['media_connections_lost']}")
    print(f"server: {summary['server'].get('note') or summary['server']}")
    lag = summary["generator"]
    print(
        f"generator loop lag p50 {lag['loop_lag_p50'] * 1000:.1f} ms,"
        f" p99 {lag['loop_lag_p99'] * 1000:.1f} ms, max {lag['loop_lag_max'] * 1000:.1f} ms;"
        f" CPU {lag['cpu_percent_mean']:.0f} % of a core"
        + (f": {lag['warning']}" if lag["warning"] else "")
    )
    for row in summary["workers"]:
        print(
            f"  {row['kind']} {row['worker']} on {row['node']}: {row['candidates']} candidates"
            f" ({row['media']} cameras), loop lag p50 {row['loop_lag_p50'] * 1000:.1f} ms,"
            f" p99 {row['loop_lag_p99'] * 1000:.1f} ms, CPU {row['cpu_percent']:.0f} %"
            + (" LAGGING" if row["lagging"] else "")
        )
    for name, b in summary["behaviours"].items():
        print(
            f"behaviour {name}: attempted {b['attempted']}, succeeded {b['succeeded']},"
            f" failed {b['failed']}"
            + (f" {b['failed_by_reason']}" if b["failed_by_reason"] else "")
            + (f", unsupported {b['unsupported']}" if b["unsupported"] else "")
        )
    print(f"report: {(report / 'report.html').resolve()}")
    for line in broken:
        print(f"THRESHOLD BROKEN: {line}")


async def setup_only(config: FleetConfig) -> None:
    async with http_session(config.target, 20) as http:
        organiser = await organiser_session(http, config.organiser, config.password)
        scenario = await create_exam(
            http, organiser, config.candidates, region=config.region, hosts=config.hosts
        )
    numbers = [n for room in scenario.rooms.values() for n in room]
    rooms = len(scenario.rooms)
    print(f"exam {scenario.exam_id}: candidates {numbers[0]}..{numbers[-1]} in {rooms} rooms")
    print(
        f"locust -f loadtests/locustfile.py --host {config.target} --exam {scenario.exam_id}"
        f" --first-candidate {numbers[0]} --candidates {len(numbers)}"
        f" --users {len(numbers)} --spawn-rate 40 --run-time 5m --headless"
    )


def _quiet(words: Sequence[str]) -> bool:
    """`--quiet` among the fleet's flags (FleetConfig does not carry it: only the
    terminal cares)."""
    only = argparse.ArgumentParser(add_help=False)
    add_quiet_flag(only)
    return bool(only.parse_known_args(list(words))[0].quiet)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["compare"]:
        return charts.compare_main(words[1:])
    config = config_from_args(words)
    if config.setup_only:
        asyncio.run(setup_only(config))
        return 0
    with Progress("examday loadtest", quiet=_quiet(words)) as progress:
        summary, broken = asyncio.run(run_fleet(config, progress))
        errors = sum(s["errors"] for s in summary["steps"].values())
        progress.close(f"done: {errors} errors, {len(broken)} thresholds broken")
    print_summary(summary, broken, config.report)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
