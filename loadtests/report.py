"""The rehearsal's verdict: summary.json, steps.csv, series.json, and thresholds that fail the run.

Thresholds read `<step>.<p50|p95|p99|errors|error_rate> <op> <value>[s|ms]` or one of
the fleet-wide counters (`tracks_missing`, `incidents_missing`, `errors`), e.g.
`login.p99 < 1s`, `tracks_missing == 0`.
"""

from __future__ import annotations

import csv
import json
import math
import operator
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.journey import Recorder, Step

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
_THRESHOLD = re.compile(
    r"^\s*([a-z_]+(?:\.[a-z0-9_]+)?)\s*(<=|>=|==|<|>)\s*([0-9.]+)\s*(ms|s)?\s*$"
)


class BadThreshold(ValueError):
    pass


def parse_threshold(text: str) -> tuple[str, str, float]:
    match = _THRESHOLD.match(text)
    if not match:
        raise BadThreshold(f"cannot read threshold {text!r}: use e.g. 'login.p99 < 1s'")
    name, op, value, unit = match.groups()
    number = float(value) * (0.001 if unit == "ms" else 1.0)
    return name, op, number


# A generator whose loop is this late adds it to the latencies it measures.
LAG_WARNING_S = 0.1
# A share (Ray worker, process) whose loop lag p99 passes this is flagged by name.
LAGGING_WORKER_S = 0.25


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarise(
    recorder: Recorder,
    expected_tracks: int,
    server: dict[str, Any],
    *,
    lag_limit: float = LAGGING_WORKER_S,
) -> dict[str, Any]:
    by_step: dict[str, list[Step]] = defaultdict(list)
    for step in recorder.steps:
        by_step[step.step].append(step)
    steps = {}
    for name, records in sorted(by_step.items()):
        good = [r.seconds for r in records if r.ok]
        steps[name] = {
            "count": len(records),
            "errors": len(records) - len(good),
            "error_rate": round((len(records) - len(good)) / len(records), 4),
            "p50": _percentile(good, 50),
            "p95": _percentile(good, 95),
            "p99": _percentile(good, 99),
            "errors_by_reason": dict(Counter(r.reason for r in records if not r.ok)),
            "busy_retries": recorder.busy_retries.get(name, 0),
        }
    received = [t for t in recorder.tracks if t["frames"] > 0]
    missing_incidents = sum(
        max(0, count - recorder.incidents_raised.get(kind, 0))
        for kind, count in recorder.incidents_expected.items()
    )
    return {
        "steps": steps,
        "errors": sum(s["errors"] for s in steps.values()),
        "tracks": {
            "expected": expected_tracks,
            "received": len(received),
            "missing": expected_tracks - len(received),
            "per_track": recorder.tracks,
        },
        "incidents": {
            "expected": dict(recorder.incidents_expected),
            "raised": dict(recorder.incidents_raised),
            "missing": missing_incidents,
        },
        # Cameras that lost their connection mid-exam, by state ("failed", "closed"),
        # each published again (`whip_republish`).
        "media_connections_lost": dict(recorder.connections_lost),
        "peak_online": max((n for _, n in recorder.online), default=0),
        "server": server,
        "generator": _generator(recorder.loop_lag, workers := _workers(recorder, lag_limit)),
        "workers": workers,
        "behaviours": recorder.behaviours.summary(),
    }


def _workers(recorder: Recorder, lag_limit: float) -> list[dict[str, Any]]:
    """One row per share of the fleet (a Ray worker, a process, or this process): where it
    ran, its candidates, its CPU, its own loop lag, and whether it lagged."""
    kind = "worker" if any(row.get("node") != "local" for row, _ in recorder.shares) else "process"
    rows = []
    for row, lag in sorted(recorder.shares, key=lambda share: share[0].get("worker", 0)):
        p99 = _percentile(lag, 99) or 0.0
        rows.append({
            **row, "kind": kind, "loop_lag_p50": _percentile(lag, 50) or 0.0,
            "loop_lag_p99": p99, "loop_lag_max": max(lag, default=0.0), "samples": len(lag),
            "lagging": p99 > lag_limit,
        })  # fmt: skip
    return rows


def _generator(loop_lag: list[float], workers: list[dict[str, Any]]) -> dict[str, Any]:
    p99 = _percentile(loop_lag, 99) or 0.0
    lagging = [f"{w['kind']} {w['worker']} on {w['node']}" for w in workers if w["lagging"]]
    warning = (
        "the generator was short of CPU: latencies include its own delay"
        " (try --processes, or --ray to spread it)"
        if p99 > LAG_WARNING_S
        else ""
    )
    if lagging:
        warning = f"lagging: {', '.join(lagging)}" + (f"; {warning}" if warning else "")
    return {
        "lagging": lagging,
        "samples": len(loop_lag),
        "loop_lag_p50": _percentile(loop_lag, 50) or 0.0,
        "loop_lag_p99": p99,
        "loop_lag_max": max(loop_lag, default=0.0),
        "warning": warning,
    }


def check(summary: dict[str, Any], thresholds: list[str]) -> list[str]:
    """The thresholds that do not hold (a missing measurement does not hold either)."""
    broken = []
    fleet = {
        "tracks_missing": summary["tracks"]["missing"],
        "incidents_missing": summary["incidents"]["missing"],
        "errors": summary["errors"],
    }
    for text in thresholds:
        name, op, limit = parse_threshold(text)
        if "." in name:
            step, metric = name.split(".", 1)
            value = summary["steps"].get(step, {}).get(metric)
        else:
            value = fleet.get(name)
        if value is None or not _OPS[op](value, limit):
            broken.append(f"{text} (measured {value})")
    return broken


def write(
    directory: Path,
    recorder: Recorder,
    summary: dict[str, Any],
    server_samples: Sequence[dict[str, Any]] = (),
) -> None:
    """The run's records: summary.json, steps.csv (every timed step) and series.json
    (candidates in rooms, every watched track, the servers, over time; seconds since the
    run began). `loadtests.charts` draws report.html from these alone."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    with (directory / "steps.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["actor", "step", "start_s", "seconds", "ok", "reason"])
        for s in recorder.steps:
            writer.writerow(
                [s.actor, s.step, f"{s.start:.3f}", f"{s.seconds:.4f}", int(s.ok), s.reason]
            )
    series = {
        "online": [[round(t, 3), n] for t, n in recorder.online],
        "tracks": recorder.track_samples,
        "server": [
            {**sample, "t": round(sample["t"] - recorder.epoch, 3)} for sample in server_samples
        ],
    }
    (directory / "series.json").write_text(json.dumps(series))
