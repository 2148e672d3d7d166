"""The rehearsal's report as charts (Plotly), built from what a run recorded, and two runs
side by side (`examday loadtest compare RUN_A RUN_B`).

A run's folder holds `summary.json`, `steps.csv` (every timed step) and `series.json`
(candidates in rooms, every watched track's bitrate and loss, the servers' CPU and memory
per component, all over time); the report is drawn from those alone, so an old run can
be drawn again or compared. Times are seconds since the run began. The HTML is one
self-contained file: plotly.js is inlined once, nothing is fetched.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.colors  # type: ignore[import-untyped]
import plotly.graph_objects as go  # type: ignore[import-untyped]
import plotly.offline  # type: ignore[import-untyped]
from plotly.subplots import make_subplots  # type: ignore[import-untyped]

from loadtests.report import parse_threshold

QUANTILES = (50, 95, 99)
DASHES = ("solid", "dash", "dot")  # run A, run B
THRESHOLD_COLOUR = "#c0392b"
# Steps shown on the latency charts, in journey order; others follow by name.
JOURNEY = (
    "login", "consent", "version_check", "network_check", "biometric_consent", "enrol", "verify",
    "liveness",
    "join", "whip_publish", "whip_republish", "heartbeat", "client_logs", "photo_upload",
    "exit", "staff_login", "whep_watch", "face_fail", "screen_share", "side_camera",
    "talkback_listen", "talkback_publish", "raise_hand", "ice_restart", "reconnect",
    "server_reconnect", "leave_return",
)  # fmt: skip


@dataclass
class StepRow:
    step: str
    start: float
    seconds: float
    ok: bool
    reason: str


@dataclass
class Run:
    name: str
    directory: Path
    summary: dict[str, Any]
    series: dict[str, Any]
    steps: list[StepRow]

    @property
    def start(self) -> float:
        return float(self.summary["run"]["start_s"])

    @property
    def end(self) -> float:
        return float(self.summary["run"]["end_s"])

    @property
    def label(self) -> str:
        began = datetime.fromtimestamp(self.summary["run"]["started_at"], UTC)
        exam = self.summary.get("fleet", {}).get("exam", "")
        return f"{self.name} ({exam}, {began:%Y-%m-%d %H:%M} UTC)"


def load_run(directory: Path) -> Run:
    summary = json.loads((directory / "summary.json").read_text())
    series = json.loads((directory / "series.json").read_text())
    with (directory / "steps.csv").open(newline="") as rows:
        steps = [
            StepRow(
                r["step"], float(r["start_s"]), float(r["seconds"]), r["ok"] == "1", r["reason"]
            )
            for r in csv.DictReader(rows)
        ]
    return Run(summary["run"]["name"], directory, summary, series, steps)


def bucket_seconds(runs: Sequence[Run]) -> float:
    """One point per bucket: about 60 over the longest run, at least a second each."""
    return max(1.0, math.ceil(max(r.end - r.start for r in runs) / 60))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _step_order(runs: Sequence[Run]) -> list[str]:
    names = {row.step for run in runs for row in run.steps}
    return [s for s in JOURNEY if s in names] + sorted(names - set(JOURNEY))


def _thresholds(runs: Sequence[Run]) -> dict[str, list[tuple[str, float]]]:
    """name (`login.p99`, `errors`, ...) -> (text, limit in the chart's unit) of every run."""
    marked: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for run in runs:
        for text in run.summary["run"].get("thresholds", []):
            name, _, limit = parse_threshold(text)
            scale = 1000.0 if name.rsplit(".", 1)[-1] in ("p50", "p95", "p99") else 1.0
            if (text, limit * scale) not in marked[name]:
                marked[name].append((text, limit * scale))
    return marked


def _colours(names: list[str]) -> dict[str, str]:
    """One colour a name, the same on every row of a chart and for both runs compared."""
    palette: list[str] = plotly.colors.qualitative.Plotly
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(set(names)))}


def _mark(figure: go.Figure, text: str, y: float, row: int | None = None) -> None:
    where = {"row": row, "col": 1} if row is not None else {}
    figure.add_hline(
        y=y, line_dash="dot", line_color=THRESHOLD_COLOUR, annotation_text=text,
        annotation_font_color=THRESHOLD_COLOUR, **where,
    )  # fmt: skip


def latency_figure(runs: Sequence[Run]) -> go.Figure:
    """Per step, p50/p95/p99 of the steps that began in each bucket, in ms."""
    steps = _step_order(runs) or ["(no steps)"]
    width = bucket_seconds(runs)
    figure = make_subplots(rows=len(steps), cols=1, shared_xaxes=True, subplot_titles=steps)
    colours = {50: "#1f77b4", 95: "#ff7f0e", 99: "#d62728"}
    for index, run in enumerate(runs):
        for row, step in enumerate(steps, start=1):
            buckets: dict[int, list[float]] = defaultdict(list)
            for r in run.steps:
                if r.step == step and r.ok:
                    buckets[int((r.start - run.start) // width)].append(r.seconds * 1000)
            keys = sorted(buckets)
            x = [min(run.end, run.start + (k + 0.5) * width) for k in keys]
            for q in QUANTILES:
                figure.add_trace(
                    go.Scatter(
                        x=x, y=[_percentile(buckets[k], q) for k in keys], mode="lines+markers",
                        name=f"{_short(run, runs)}p{q}", legendgroup=f"{index}p{q}",
                        showlegend=row == 1, line={"color": colours[q], "dash": DASHES[index % 3]},
                        meta=f"{run.name}:{step}:p{q}",
                    ),
                    row=row, col=1,
                )  # fmt: skip
    marked = _thresholds(runs)
    for row, step in enumerate(steps, start=1):
        for q in QUANTILES:
            for text, limit in marked.get(f"{step}.p{q}", []):
                _mark(figure, text, limit, row)
        figure.update_yaxes(title_text="ms", rangemode="tozero", row=row, col=1)
    figure.update_xaxes(title_text="seconds since the run began", row=len(steps), col=1)
    figure.update_layout(
        title="Latency per step over time (p50 / p95 / p99 of the steps begun in each"
        f" {width:g} s)", height=max(400, 190 * len(steps)),
    )  # fmt: skip
    return figure


def online_series(run: Run) -> tuple[list[float], list[int]]:
    """Candidates in rooms from the run's first second to its last (a step line)."""
    points = [(float(t), int(n)) for t, n in run.series["online"]]
    x, y = [run.start], [0]
    for t, n in points:
        x.append(min(max(t, run.start), run.end))
        y.append(n)
    x.append(run.end)
    y.append(y[-1])
    return x, y


def online_figure(runs: Sequence[Run]) -> go.Figure:
    figure = go.Figure()
    for index, run in enumerate(runs):
        x, y = online_series(run)
        figure.add_trace(
            go.Scatter(
                x=x, y=y, mode="lines", line_shape="hv", name=f"{_short(run, runs)}in rooms",
                line={"dash": DASHES[index % 3]}, meta=f"{run.name}:online",
            )
        )  # fmt: skip
        planned = run.summary.get("fleet", {}).get("candidates")
        if planned:
            _mark(figure, f"{_short(run, runs)}{planned} candidates planned", float(planned))
    figure.update_layout(
        title="Candidates in rooms: ramp, plateau, departure",
        xaxis_title="seconds since the run began", yaxis_title="candidates", height=380,
    )  # fmt: skip
    return figure


def tracks_figure(runs: Sequence[Run]) -> go.Figure:
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True,
        subplot_titles=("bitrate per watched track (kbps)", "loss per watched track (%)"),
    )  # fmt: skip
    colours = _colours([_track(s) for run in runs for s in run.series["tracks"]])
    for index, run in enumerate(runs):
        by_track: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for sample in run.series["tracks"]:
            by_track[_track(sample)].append(sample)
        for track, samples in sorted(by_track.items()):
            for row, key in ((1, "kbps"), (2, "loss_pct")):
                figure.add_trace(
                    go.Scatter(
                        x=[s["t"] for s in samples], y=[s[key] for s in samples],
                        mode="lines", name=f"{_short(run, runs)}{track}", legendgroup=track,
                        showlegend=row == 1,
                        line={"dash": DASHES[index % 3], "color": colours[track]},
                        meta=f"{run.name}:track:{track}:{key}",
                    ),
                    row=row, col=1,
                )  # fmt: skip
    figure.update_xaxes(title_text="seconds since the run began", row=2, col=1)
    figure.update_yaxes(rangemode="tozero")
    figure.update_layout(title="Media: every watched track over the run", height=560)
    return figure


def _track(sample: dict[str, Any]) -> str:
    return f"{sample['room']}/{sample['candidate'][:8]}"


def server_figure(runs: Sequence[Run]) -> go.Figure:
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True,
        subplot_titles=("CPU per component (% of one core)", "memory per component (RSS, MiB)"),
    )  # fmt: skip
    colours = _colours([name for run in runs for s in run.series["server"] for name in s])
    for index, run in enumerate(runs):
        components: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
        for sample in run.series["server"]:
            for name, value in sample.items():
                if name != "t":
                    components[name].append((sample["t"], value["cpu_percent"], value["rss_mib"]))
        for name, points in sorted(components.items()):
            for row, column in ((1, 1), (2, 2)):
                figure.add_trace(
                    go.Scatter(
                        x=[p[0] for p in points], y=[p[column] for p in points], mode="lines",
                        name=f"{_short(run, runs)}{name}", legendgroup=name,
                        showlegend=row == 1,
                        line={"dash": DASHES[index % 3], "color": colours[name]},
                        meta=f"{run.name}:server:{name}:{'cpu' if row == 1 else 'rss'}",
                    ),
                    row=row, col=1,
                )  # fmt: skip
    figure.update_xaxes(title_text="seconds since the run began", row=2, col=1)
    figure.update_yaxes(rangemode="tozero")
    figure.update_layout(title="Servers (a local stack's processes, by component)", height=560)
    return figure


def errors_figure(runs: Sequence[Run]) -> go.Figure:
    """Failed steps per bucket, stacked by step and reason; the running total as a line."""
    width = bucket_seconds(runs)
    figure = go.Figure()
    for index, run in enumerate(runs):
        by_reason: dict[str, Counter[int]] = defaultdict(Counter)
        failed = sorted(r.start for r in run.steps if not r.ok)
        for r in run.steps:
            if not r.ok:
                by_reason[f"{r.step}: {r.reason or 'failed'}"][
                    int((r.start - run.start) // width)
                ] += 1
        for reason, counts in sorted(by_reason.items()):
            keys = sorted(counts)
            figure.add_trace(
                go.Bar(
                    x=[run.start + (k + 0.5) * width for k in keys], y=[counts[k] for k in keys],
                    name=f"{_short(run, runs)}{reason}", offsetgroup=str(index),
                    meta=f"{run.name}:errors:{reason}",
                )
            )  # fmt: skip
        figure.add_trace(
            go.Scatter(
                x=[run.start, *failed, run.end], y=[0, *range(1, len(failed) + 1), len(failed)],
                mode="lines", line_shape="hv", name=f"{_short(run, runs)}errors so far",
                line={"color": "#555", "dash": DASHES[index % 3]}, meta=f"{run.name}:errors",
            )
        )  # fmt: skip
    for text, limit in _thresholds(runs).get("errors", []):
        _mark(figure, text, limit)
    figure.update_layout(
        title=f"Errors over time by step and reason (per {width:g} s; line: errors so far)",
        barmode="stack", xaxis_title="seconds since the run began", yaxis_title="failed steps",
        yaxis_rangemode="tozero",
        height=420,
    )  # fmt: skip
    return figure


def figures(runs: Sequence[Run]) -> dict[str, go.Figure]:
    """Every chart of the report, each over the whole run (the longest, when compared)."""
    drawn = {
        "online": online_figure(runs),
        "latency": latency_figure(runs),
        "errors": errors_figure(runs),
        "tracks": tracks_figure(runs),
        "server": server_figure(runs),
    }
    whole = [min(r.start for r in runs), max(r.end for r in runs)]
    for figure in drawn.values():
        figure.update_xaxes(range=whole)
    return drawn


def _short(run: Run, runs: Sequence[Run]) -> str:
    return f"{run.name} " if len(runs) > 1 else ""


def key_figures(run: Run) -> dict[str, float | None]:
    """The figures a rehearsal is judged by (ms for latencies)."""
    summary = run.summary
    out: dict[str, float | None] = {
        "candidates in rooms, peak": summary["peak_online"],
        "errors": summary["errors"],
    }
    for step, q in (("login", "p50"), ("login", "p95"), ("login", "p99"), ("join", "p99"),
                    ("heartbeat", "p99"), ("verify", "p99"), ("whip_publish", "p99")):  # fmt: skip
        value = summary["steps"].get(step, {}).get(q)
        out[f"{step} {q} (ms)"] = None if value is None else round(value * 1000, 1)
    out["tracks missing"] = summary["tracks"]["missing"]
    out["incidents missing"] = summary["incidents"]["missing"]
    out["server CPU, mean (% of one core)"] = summary["server"].get("cpu_percent_mean_total")
    out["generator loop lag p99 (ms)"] = round(summary["generator"]["loop_lag_p99"] * 1000, 1)
    out["generator shares lagging"] = len(summary["generator"].get("lagging", []))
    out["behaviours failed"] = sum(b["failed"] for b in summary.get("behaviours", {}).values())
    return out


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:,.6g}"


def _table(runs: Sequence[Run]) -> str:
    figures_by_run = [key_figures(r) for r in runs]
    head = "".join(f"<th>{html.escape(r.name)}</th>" for r in runs)
    if len(runs) == 2:
        head += "<th>delta</th><th>delta %</th>"
    rows = []
    for name in figures_by_run[0]:
        values = [f.get(name) for f in figures_by_run]
        cells = "".join(f"<td>{_cell(v)}</td>" for v in values)
        if len(runs) == 2:
            a, b = values
            delta = None if a is None or b is None else b - a
            percent = None if delta is None or not a else round(100 * delta / a, 1)
            cells += f"<td>{'' if delta is None else '+' if delta > 0 else ''}{_cell(delta)}</td>"
            cells += f"<td>{_cell(percent)}</td>"
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f"<table><tr><th>figure</th>{head}</tr>{''.join(rows)}</table>"


def _reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counts.items())


def _steps_table(run: Run) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{s['count']}</td><td>{s['errors']}</td>"
        + "".join(
            f"<td>{'-' if s[q] is None else f'{s[q] * 1000:,.1f}'}</td>"
            for q in ("p50", "p95", "p99")
        )
        + f"<td>{html.escape(_reasons(s['errors_by_reason']))}</td></tr>"
        for name, s in run.summary["steps"].items()
    )
    return (
        "<table><caption>Steps (ms)</caption><tr><th>step</th><th>count</th><th>errors</th>"
        f"<th>p50</th><th>p95</th><th>p99</th><th>errors by reason</th></tr>{rows}</table>"
    )


def _workers_table(run: Run) -> str:
    """Each share of the generator: where it ran, its load, its loop lag and CPU."""
    rows = "".join(
        f"<tr{' class=broken' if w['lagging'] else ''}><td>{html.escape(str(w['kind']))}"
        f" {w['worker']}</td><td>{html.escape(str(w['node']))}</td><td>{w['candidates']}</td>"
        f"<td>{w['media']}</td><td>{w['loop_lag_p50'] * 1000:,.1f}</td>"
        f"<td>{w['loop_lag_p99'] * 1000:,.1f}</td><td>{w['cpu_percent']:,.0f}</td>"
        f"<td>{'lagging' if w['lagging'] else 'kept up'}</td></tr>"
        for w in run.summary.get("workers", [])
    )
    if not rows:
        return ""
    return (
        "<table><caption>Generator shares (loop lag in ms, CPU in % of one core)</caption>"
        "<tr><th>share</th><th>node</th><th>candidates</th><th>cameras</th><th>lag p50</th>"
        f"<th>lag p99</th><th>CPU</th><th>verdict</th></tr>{rows}</table>"
    )


def _behaviours_table(run: Run) -> str:
    """Each behaviour given to part of the fleet, and how it went."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{b['attempted']}</td><td>{b['succeeded']}</td>"
        f"<td>{b['failed']}</td><td>{b['unsupported']}</td>"
        f"<td>{html.escape(_reasons(b['failed_by_reason']))}</td></tr>"
        for name, b in run.summary.get("behaviours", {}).items()
    )
    if not rows:
        return ""
    return (
        "<table><caption>Candidate behaviours</caption><tr><th>behaviour</th><th>attempted"
        "</th><th>succeeded</th><th>failed</th><th>unsupported</th><th>failed by reason</th>"
        f"</tr>{rows}</table>"
    )


_STYLE = """body{font-family:system-ui,sans-serif;max-width:75rem;margin:2rem auto;color:#111}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;
text-align:right}td:first-child,th:first-child{text-align:left}.broken{color:#c0392b}"""


def page(title: str, runs: Sequence[Run], intro: str, tables: str) -> str:
    charts = "".join(
        f'<section id="{name}">'
        + figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}")
        + "</section>"
        for name, figure in figures(runs).items()
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>{_STYLE}</style>
<script>{plotly.offline.get_plotlyjs()}</script></head><body>
<h1>{html.escape(title)}</h1>{intro}{tables}{charts}</body></html>
"""


def render(run: Run) -> str:
    summary = run.summary
    tracks, incidents = summary["tracks"], summary["incidents"]
    thresholds = summary["run"].get("thresholds", [])
    broken = set(summary.get("broken", []))
    marks = "".join(
        f"<li{' class=broken' if any(b.startswith(t) for b in broken) else ''}>"
        f"{html.escape(t)}{' (broken)' if any(b.startswith(t) for b in broken) else ''}</li>"
        for t in thresholds
    )
    intro = (
        f"<p>{html.escape(run.label)}: {run.end - run.start:.0f} s. Tracks expected"
        f" {tracks['expected']}, received {tracks['received']}, missing {tracks['missing']}."
        f" Incidents expected {html.escape(json.dumps(incidents['expected']))}, raised"
        f" {html.escape(json.dumps(incidents['raised']))}."
        f" Generator: {html.escape(summary['generator'].get('warning') or 'kept up')}.</p>"
        + (f"<p>Thresholds (dotted red on the charts):</p><ul>{marks}</ul>" if marks else "")
    )
    tables = _table([run]) + _steps_table(run) + _workers_table(run) + _behaviours_table(run)
    return page(f"examday rehearsal: {run.name}", [run], intro, tables)


def compare(a: Run, b: Run) -> str:
    intro = (
        f"<p>A: {html.escape(a.label)}, {a.end - a.start:.0f} s (solid lines).<br>"
        f"B: {html.escape(b.label)}, {b.end - b.start:.0f} s (dashed lines).</p>"
    )
    return page(f"examday rehearsals compared: {a.name} vs {b.name}", [a, b], intro, _table([a, b]))


def write_report(directory: Path) -> Path:
    """report.html of the run recorded in `directory`."""
    out = directory / "report.html"
    out.write_text(render(load_run(directory)))
    return out


def compare_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="examday loadtest compare",
        description="Two rehearsals side by side: the same charts overlaid (A solid, B"
        " dashed) and a table of key figures with deltas (B - A).",
    )
    parser.add_argument("run_a", type=Path, help="report folder of run A")
    parser.add_argument("run_b", type=Path, help="report folder of run B")
    parser.add_argument("--out", type=Path, help="the HTML to write (default: beside run B)")
    args = parser.parse_args(argv)
    runs = []
    for folder in (args.run_a, args.run_b):
        if not (folder / "series.json").exists():
            parser.error(f"{folder}: not a rehearsal report folder (no series.json)")
        runs.append(load_run(folder))
    a, b = runs
    if a.name == b.name:
        a.name, b.name = f"A:{a.name}", f"B:{b.name}"
    out = args.out or args.run_b.parent / f"compare-{args.run_a.name}-{args.run_b.name}.html"
    out.write_text(compare(a, b))
    print(f"comparison: {out.resolve()}")
    return 0
