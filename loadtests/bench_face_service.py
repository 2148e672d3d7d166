"""The service half of `examday bench face` (`loadtests.bench_face`): one gateway and
verifier pool on the bench's stack, closed-loop load in the frame mix, and per window
the throughput, latencies and CPU ms per frame from process clocks.

`run_service` starts a gateway for one phase, drives windows of load (setting the pool's
`max_batch` before each), and removes the phase's pool so the next phase gets the CPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psutil
import ray
from PIL import Image

from actors.face.client import VerifierClient
from infra import progress, raycluster, services
from infra.errors import DependencyDown, ExamdayError
from infra.processes import free_port, port_open
from infra.settings import Settings, settings_to_env
from infra.settings.face import VerifierSettings
from infra.settings.ml import FaceSettings
from infra.telemetry import actor_call
from loadtests import bench_face_model
from loadtests.bench_gateway import bench_organiser
from loadtests.httpload import Latencies, problem_reason, run_closed_loop

CANDIDATES = 500  # one enrolment per candidate at a time: the service refuses overlaps
WARMUP_S = 6.0
SETTLE_S = 2.0  # after a change of max_batch, before the window counts


def webcam_jpegs(frame_size: tuple[int, int] = bench_face_model.FRAME_SIZE) -> list[bytes]:
    jpegs = []
    for frame in bench_face_model.webcam_frames(FaceSettings(), frame_size):
        out = io.BytesIO()
        Image.fromarray(frame).save(out, "JPEG", quality=90)
        jpegs.append(out.getvalue())
    return jpegs


def _clocks(gateway_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the gateway (and its workers), of this load generator, and of
    the whole machine (busy time of every core: other processes included)."""
    gateway = 0.0
    if gateway_pid is not None:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(gateway_pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                gateway += times.user + times.system
    machine = psutil.cpu_times()
    return {
        "gateway": gateway,
        "load_generator": time.process_time(),
        "machine": machine.user
        + machine.system
        + machine.nice
        + getattr(machine, "irq", 0.0)
        + getattr(machine, "softirq", 0.0),
    }


def _cpu_per_frame(
    before: dict[str, Any], after: dict[str, Any], clocks: tuple[dict[str, float], ...]
) -> dict[str, float] | None:
    """CPU ms per frame between two readings: the replicas (all of it, the model thread's,
    and the rest: Ray, pickling, the event loop), the gateway, the load generator, and the
    whole machine, which on a shared machine also holds other people's work."""
    names = [name for name in after if name in before]

    def delta(key: str) -> float:
        return float(sum(after[n][key] - before[n][key] for n in names))

    frames = delta("frames")
    if frames <= 0:
        return None
    total, model = delta("cpu_seconds"), delta("model_cpu_seconds")
    first, last = clocks
    figures = {"replicas": total, "model": model, "serving": total - model}
    figures |= {key: last[key] - first[key] for key in last}
    return {key: round(1000 * value / frames, 2) for key, value in figures.items()}


async def _exam(http: aiohttp.ClientSession, organiser: dict[str, str]) -> tuple[str, list[str]]:
    """An exam with one room of CANDIDATES; its id and the candidate ids."""
    exam_id, now = f"face{secrets.token_hex(3)}", datetime.now(UTC)
    body = {
        "id": exam_id,
        "title": "Face benchmark",
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=3)).isoformat(),
        "region": "cn-north",
        "room_capacity": CANDIDATES,
    }
    async with http.post("/v1/exams", json=body, headers=organiser) as response:
        assert response.status == 201, await response.text()
    rows = ["exam_no,candidate_no,name,date_of_birth,room,guardian_consent"]
    rows += [f"{exam_id},{n},Candidate {n},2000-01-01,r0," for n in range(CANDIDATES)]
    csv = {**organiser, "Content-Type": "text/csv"}
    async with http.post(f"/v1/exams/{exam_id}/roster", data="\n".join(rows), headers=csv) as r:
        assert r.status == 200, await r.text()
    async with http.get(f"/v1/exams/{exam_id}/rooms/r0", headers=organiser) as response:
        return exam_id, list((await response.json())["roster"])


async def _drive(
    settings: Settings,
    windows: Sequence[int],
    configure: Callable[[int], None],
    seconds: float,
    concurrency: int,
    gateway_pid: int | None,
) -> dict[str, list[dict[str, Any]]]:
    """Closed-loop load in the frame mix; before each window the pool's max_batch is set."""
    joins, samples = webcam_jpegs(), webcam_jpegs(bench_face_model.MONITOR_SIZE)
    verifier = VerifierClient(settings)
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency + 8)
    async with aiohttp.ClientSession(
        settings.gateway_url, timeout=timeout, connector=connector
    ) as http:
        organiser = await bench_organiser(settings, http)
        exam_id, cids = await _exam(http, organiser)
        headers = {**organiser, "Content-Type": "image/jpeg"}
        kinds: dict[str, Latencies] = {}

        async def one(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
            began = asyncio.get_running_loop().time()
            kind = "join_640x480" if bench_face_model.is_verification(n) else "monitor_320x240"
            if kind.startswith("join"):
                path = f"/v1/exams/{exam_id}/candidates/{cids[n % len(cids)]}/face"
                async with session.put(path, data=joins[n % len(joins)], headers=headers) as r:
                    status, reason = r.status, await problem_reason(r)
            else:
                try:
                    await verifier.analyse(samples[n % len(samples)])
                    status, reason = 200, ""
                except ExamdayError as exc:
                    status, reason = exc.status, exc.reason
            if 200 <= status < 300:
                kinds.setdefault(kind, Latencies()).add(asyncio.get_running_loop().time() - began)
            return status, reason

        pool = await asyncio.to_thread(
            ray.get_actor, settings.verifier.pool_name, namespace=settings.ray_namespace
        )

        async def loads() -> dict[str, Any]:
            members = await actor_call(pool.members)
            answers = await asyncio.gather(*(actor_call(h.load) for _, h in members))
            return {name: load for (name, _), load in zip(members, answers, strict=True)}

        # Models loaded, replicas up and the first batches run before anything counts.
        await run_closed_loop(http, one, concurrency=concurrency, seconds=WARMUP_S)
        results: dict[str, list[dict[str, Any]]] = {}
        for index, size in enumerate(windows):
            progress.note(f"window {index + 1} of {len(windows)}: max_batch {size}")
            await asyncio.to_thread(configure, size)
            await run_closed_loop(http, one, concurrency=concurrency, seconds=SETTLE_S)
            kinds.clear()
            before, first = await loads(), _clocks(gateway_pid)
            measured = await run_closed_loop(http, one, concurrency=concurrency, seconds=seconds)
            last = _clocks(gateway_pid)
            window = {
                "all": measured,
                "kinds": dict(kinds),
                "cpu_ms_per_frame": _cpu_per_frame(before, await loads(), (first, last)),
            }
            results.setdefault(str(size), []).append(window)
    return results


def _merged(windows: list[Latencies]) -> dict[str, Any]:
    merged = Latencies(samples=[s for w in windows for s in w.samples])
    for window in windows:
        merged.errors.update(window.errors)
    summary = merged.summary()
    summary.pop("req_per_s")
    return summary


def _combined(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median rate over the windows, latency percentiles over all their requests."""
    # Each request is exactly one face.
    rates = sorted(w["all"].summary()["req_per_s"] for w in windows)
    cpu = [w["cpu_ms_per_frame"] for w in windows if w["cpu_ms_per_frame"] is not None]
    names = sorted({kind for w in windows for kind in w["kinds"]})
    by_kind = {}
    for kind in names:
        summary = _merged([w["kinds"][kind] for w in windows if kind in w["kinds"]])
        by_kind[kind] = {k: summary[k] for k in ("requests", "p50_ms", "p95_ms", "p99_ms")}
    return {
        "faces_per_s": statistics.median(rates),
        "windows_faces_per_s": rates,
        "cpu_ms_per_frame": {part: statistics.median(c[part] for c in cpu) for part in cpu[0]}
        if cpu
        else None,
        **_merged([w["all"] for w in windows]),
        "by_kind": by_kind,
    }


def run_service(
    settings: Settings,
    verifier: VerifierSettings,
    windows: Sequence[int],
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    """One gateway and pool; windows of load, each after setting the pool's max_batch."""
    phase = settings.model_copy(update={"verifier": verifier, "gateway_port": free_port()})
    gateway = services.gateway_process(phase, {**os.environ, **settings_to_env(phase)})
    gateway.start()
    try:
        gateway.wait_healthy(lambda: services.gateway_healthy(phase), 120)
    except DependencyDown:
        print(gateway.log_path.read_text()[-4000:], file=sys.stderr)
        raise
    try:
        raycluster.connect(phase)
        pool = ray.get_actor(verifier.pool_name, namespace=phase.ray_namespace)

        def configure(size: int) -> None:
            ray.get(actor_call(pool.configure, size, verifier.max_wait_s), timeout=60)

        raw = asyncio.run(_drive(phase, windows, configure, seconds, concurrency, gateway.pid))
    finally:
        gateway.stop()
        loads = _remove_pool(phase)
    results: dict[str, Any] = {size: _combined(runs) for size, runs in raw.items()}
    replicas = {
        name: {k: load[k] for k in ("frames", "batches", "largest_batch", "batch_sizes")}
        for name, load in loads.items()
    }
    return {"configs": results, "replicas": replicas}


def _remove_pool(settings: Settings) -> dict[str, Any]:
    """Kill a phase's pool and replicas (the next phase gets the CPUs); their last loads."""
    if not port_open(settings.ray_head_ip, settings.ray_gcs_port):
        raise DependencyDown("the bench's Ray head is gone", reason="ray_head_gone")
    pool = ray.get_actor(settings.verifier.pool_name, namespace=settings.ray_namespace)
    status = ray.get(actor_call(pool.status), timeout=30)
    for name in [*status["replicas"], settings.verifier.pool_name]:
        ray.kill(ray.get_actor(name, namespace=settings.ray_namespace), no_restart=True)
    loads: dict[str, Any] = status["loads"]
    return loads
