"""The rehearsal's verdict: summary.json, steps.csv, report.html, and thresholds that fail the run.

Thresholds read `<step>.<p50|p95|p99|errors|error_rate> <op> <value>[s|ms]` or one of
the fleet-wide counters (`tracks_missing`, `incidents_missing`, `errors`), e.g.
`login.p99 < 1s`, `tracks_missing == 0`.
"""

from __future__ import annotations

import csv
import html
import json
import math
import operator
import re
from collections import Counter, defaultdict
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


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarise(recorder: Recorder, expected_tracks: int, server: dict[str, Any]) -> dict[str, Any]:
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
        "generator": _generator(recorder.loop_lag),
    }


# A generator whose loop is this late adds it to the latencies it measures.
LAG_WARNING_S = 0.1


def _generator(loop_lag: list[float]) -> dict[str, Any]:
    p99 = _percentile(loop_lag, 99) or 0.0
    return {
        "samples": len(loop_lag),
        "loop_lag_p50": _percentile(loop_lag, 50) or 0.0,
        "loop_lag_p99": p99,
        "loop_lag_max": max(loop_lag, default=0.0),
        "warning": (
            "the generator was short of CPU: latencies include its own delay"
            " (try --processes, or --ray to spread it)"
            if p99 > LAG_WARNING_S
            else ""
        ),
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


def write(directory: Path, recorder: Recorder, summary: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    with (directory / "steps.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["actor", "step", "start_s", "seconds", "ok", "reason"])
        for s in recorder.steps:
            writer.writerow(
                [s.actor, s.step, f"{s.start:.3f}", f"{s.seconds:.4f}", int(s.ok), s.reason]
            )
    (directory / "report.html").write_text(_html(recorder, summary))


def _svg_chart(title: str, series: dict[str, list[tuple[float, float]]], unit: str) -> str:
    """A small scatter/line chart as inline SVG: no JavaScript, no external assets."""
    width, height, pad = 640, 220, 40
    points = [p for s in series.values() for p in s]
    if not points:
        return f"<h2>{html.escape(title)}</h2><p>no data</p>"
    max_x = max(x for x, _ in points) or 1.0
    max_y = max(y for _, y in points) or 1.0
    colours = ["#1f5fa8", "#b8471b", "#2b7a3d", "#7a2b7a", "#8a6d00", "#444"]
    parts = [
        f'<svg role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}">'
    ]
    parts.append(
        f'<rect x="{pad}" y="10" width="{width - pad - 10}" height="{height - pad - 10}" fill="none" stroke="#999"/>'
    )
    for i, (name, values) in enumerate(sorted(series.items())):
        colour = colours[i % len(colours)]
        for x, y in values[:5000]:
            cx = pad + x / max_x * (width - pad - 10)
            cy = height - pad - y / max_y * (height - pad - 20)
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="1.6" fill="{colour}"/>')
        parts.append(
            f'<text x="{pad + 8 + 110 * i}" y="{height - 8}" fill="{colour}" font-size="12">{html.escape(name)}</text>'
        )
    parts.append(f'<text x="4" y="20" font-size="11">{max_y:.3g} {unit}</text>')
    parts.append(
        f'<text x="{width - 60}" y="{height - pad + 14}" font-size="11">{max_x:.0f} s</text>'
    )
    parts.append("</svg>")
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)  # fmt: skip


def _html(recorder: Recorder, summary: dict[str, Any]) -> str:
    latency: dict[str, list[tuple[float, float]]] = defaultdict(list)
    errors: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in recorder.steps:
        if s.ok:
            latency[s.step].append((s.start, s.seconds * 1000))
        else:
            errors[s.step].append((s.start, 1.0))
    bitrate = {
        "kbps per watched track": [
            (float(i), float(t["kbps"])) for i, t in enumerate(recorder.tracks)
        ]
    }
    online = {"candidates in rooms": [(t, float(n)) for t, n in recorder.online]}
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{s['count']}</td><td>{s['errors']}</td>"
        f"<td>{_ms(s['p50'])}</td><td>{_ms(s['p95'])}</td><td>{_ms(s['p99'])}</td></tr>"
        for name, s in summary["steps"].items()
    )
    tracks, incidents = summary["tracks"], summary["incidents"]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>examday rehearsal report</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto;color:#111}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:.25rem .5rem;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>examday rehearsal report</h1>
<p>Peak candidates in rooms: {summary["peak_online"]}. Errors: {summary["errors"]}.
Tracks expected {tracks["expected"]}, received {tracks["received"]}, missing {tracks["missing"]}.
Incidents expected {html.escape(json.dumps(incidents["expected"]))}, raised {html.escape(json.dumps(incidents["raised"]))}.</p>
<table><caption>Steps (milliseconds)</caption><tr><th>step</th><th>count</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th></tr>{rows}</table>
{_svg_chart("Latency over time", latency, "ms")}
{_svg_chart("Concurrency", online, "candidates")}
{_svg_chart("Bitrate", bitrate, "kbps")}
{_svg_chart("Errors over time", errors, "")}
<h2>Server</h2><pre>{html.escape(json.dumps(summary["server"], indent=2))}</pre>
<h2>Generator</h2><pre>{html.escape(json.dumps(summary["generator"], indent=2))}</pre>
</body></html>
"""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"
