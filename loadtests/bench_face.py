"""`examday bench face`: the face verifier service end to end, next to the bare model.

On a private loopback stack (Redis, SeaweedFS, one Ray node, the gateway as its own
uvicorn process), `concurrency` requests stay in flight, in the load's frame mix
(`bench_face_model.FRAME_MIX`): monitoring samples, 320x240 JPEGs sent to the verifier
through `VerifierClient.analyse` exactly as the face monitor actor sends the media
plane's samples (no HTTP route exists for them), and join-time frames, 640x480 JPEGs
sent through the gateway as organiser enrolments (`PUT .../face`: decode, detection,
quality, embedding, a sealed template to the region's S3, a Redis record; the model
work of a verification, which a candidate can only do a few times). Windows of
`seconds` alternate between the batch sizes, `rounds` times, on one pool whose
`max_batch` is set before each window (medians reported); a single replica at
max_batch 1, the naive service, is measured first. Each window also reports CPU ms
per frame from process clocks, which other load on a shared machine hardly moves: the
replicas' (model thread and serving apart), the gateway's, this load generator's,
and the whole machine's (everything, other people's work included). The bare model
(`loadtests.bench_face_model.run`, same mix, no Ray, no HTTP) runs before, alone: one
process with torch's threads, and one process per replica side by side; `stages` is
its CPU time per stage.

    ratio                    best batched / max_batch 1, same replicas (batching alone)
    ratio_vs_single_replica  best batched / one replica at max_batch 1
    overhead                 best bare model / best service
    capacity                 candidates one CPU core monitors at one sample per 10 s,
                             from the service's faces/s per core (gateway, S3 included)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import ray
from PIL import Image

from actors.face_client import VerifierClient
from actors.face_settings import VerifierSettings
from infra import raycluster, services
from infra.errors import DependencyDown, ExamdayError
from infra.processes import free_port, port_open
from infra.settings import Settings, settings_to_env
from infra.stack import LocalStack, isolated_settings
from infra.telemetry import actor_call
from loadtests import bench_face_model
from loadtests.bench_gateway import bench_organiser
from loadtests.httpload import Latencies, problem_reason, run_closed_loop
from ml.config import FaceSettings

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
        for size in windows:
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
        by_kind[kind] = {k: summary[k] for k in ("requests", "p50_ms", "p95_ms")}
    return {
        "faces_per_s": statistics.median(rates),
        "windows_faces_per_s": rates,
        "cpu_ms_per_frame": {part: statistics.median(c[part] for c in cpu) for part in cpu[0]}
        if cpu
        else None,
        **_merged([w["all"] for w in windows]),
        "by_kind": by_kind,
    }


def _service(
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


def run_local(
    batch_sizes: Sequence[int],
    seconds: float,
    concurrency: int,
    replicas: int,
    threads: int,
    rounds: int,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="examday-bench-face-") as state:
        settings = isolated_settings(
            Path(state), env="development", cookie_secure=False, trace_file=None
        )
        _progress(f"bare model: CPU time per stage, {threads or 1} thread(s) like a replica")
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            stages = pool.apply(_stages_run, (threads or 1, batch_sizes))
        _progress("bare model")
        bare = bench_face_model.run(batch_sizes, seconds, FaceSettings())
        _progress(f"bare model, {replicas} processes of {threads or 1} thread(s)")
        parallel = bare_in_processes(replicas, threads or 1, batch_sizes, seconds)
        stack = LocalStack(settings, nodes=1, with_gateway=False)
        stack.start()
        try:
            _progress("service: one replica, max_batch 1, one request at a time per replica")
            single = _service(
                settings, _verifier(1, 1, threads, concurrency), [1] * rounds, seconds, concurrency
            )
            _progress(f"service: {replicas} replicas, max_batch {batch_sizes} in turn")
            verifier = _verifier(max(batch_sizes), replicas, threads, concurrency)
            service = _service(settings, verifier, list(batch_sizes) * rounds, seconds, concurrency)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            stack.stop()
    return {
        "frame_mix": bench_face_model.FRAME_MIX,
        "stages": stages,
        "bare_model": bare,
        "bare_model_parallel": parallel,
        "service": {"single_replica_batch_1": single["configs"]["1"], **service["configs"]},
        "replica_loads": {**single["replicas"], **service["replicas"]},
        "rounds": rounds,
        "seconds_per_window": seconds,
    }


def _verifier(max_batch: int, replicas: int, threads: int, concurrency: int) -> VerifierSettings:
    return VerifierSettings(
        pool_name=f"bench-face-{secrets.token_hex(3)}",
        max_batch=max_batch,
        max_queue=max(64, 2 * concurrency, max_batch),
        min_replicas=replicas,
        max_replicas=replicas,
        num_cpus=min(1.0, 2.0 / replicas),
        torch_threads=threads,
    )


def _bare_run(threads: int, batch_sizes: Sequence[int], seconds: float) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return bench_face_model.run(batch_sizes, seconds, FaceSettings())


def _stages_run(threads: int, batch_sizes: Sequence[int]) -> dict[str, Any]:
    import torch

    # Process CPU time counts every torch thread, spinning ones too: measure as a replica runs.
    torch.set_num_threads(threads)
    return bench_face_model.stages(batch_sizes, FaceSettings())


def bare_in_processes(
    processes: int, threads: int, batch_sizes: Sequence[int], seconds: float
) -> dict[str, Any]:
    """The bare model on the replicas' CPU budget: one process per replica, side by side."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(_bare_run, [(threads, batch_sizes, seconds)] * processes, 1)
    faces = {
        str(size): round(sum(r["batch_sizes"][str(size)]["faces_per_s"] for r in results), 2)
        for size in batch_sizes
    }
    return {
        "processes": processes,
        "torch_threads": threads,
        "batch_sizes": {size: {"faces_per_s": value} for size, value in faces.items()},
    }


def summarise(report: dict[str, Any], concurrency: int) -> dict[str, Any]:
    service = report["service"]
    bare = max(
        r["faces_per_s"]
        for kind in ("bare_model", "bare_model_parallel")
        for r in report[kind]["batch_sizes"].values()
    )
    best = max(r["faces_per_s"] for r in service.values())
    cores = os.cpu_count() or 1
    summary: dict[str, Any] = {"concurrency": concurrency}
    batched = [r["faces_per_s"] for size, r in service.items() if size.isdigit() and size != "1"]
    if "1" in service and batched:
        # Batching alone: the same replicas with max_batch 1 and with the best batch size.
        summary["ratio"] = round(max(batched) / max(service["1"]["faces_per_s"], 1e-9), 3)
    single = service.get("single_replica_batch_1")
    if single and batched:
        # Batching and replicas together, against one request at a time on one replica.
        summary["ratio_vs_single_replica"] = round(
            max(batched) / max(single["faces_per_s"], 1e-9), 3
        )
    cpu = {
        size: r["cpu_ms_per_frame"]["replicas"]
        for size, r in service.items()
        if size.isdigit() and r.get("cpu_ms_per_frame")
    }
    if "1" in cpu and len(cpu) > 1:
        # The same comparison in replica CPU time per frame: what batching saves per frame,
        # whatever else the machine was running.
        summary["cpu_ratio"] = round(cpu["1"] / min(v for k, v in cpu.items() if k != "1"), 3)
    summary["overhead"] = round(bare / max(best, 1e-9), 3)
    summary["capacity"] = {
        "cpu_cores": cores,
        "service_faces_per_s_per_core": round(best / cores, 2),
        "candidates_per_core_at_one_sample_per_10s": int(best / cores * 10),
        "bare_model_bound": int(bare / cores * 10),
    }
    return summary


def _progress(phase: str) -> None:
    print(f"bench face: {phase}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="examday bench face", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per configuration")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--batch-sizes", default="1,8,32", help="verifier max_batch, in turn")
    parser.add_argument("--replicas", type=int, default=2, help="verifier replicas")
    parser.add_argument("--torch-threads", type=int, default=0, help="per replica; 0: Ray's")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    if min(args.seconds, args.rounds, args.concurrency, args.replicas, *sizes) <= 0:
        parser.error("seconds, rounds, concurrency, replicas and batch sizes must be positive")
    report = run_local(
        sizes, args.seconds, args.concurrency, args.replicas, args.torch_threads, args.rounds
    )
    report.update(summarise(report, args.concurrency))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("frame mix:", report["frame_mix"])
    for size, row in report["stages"]["cpu_ms"].items():
        print(f"bare model CPU ms, {size}:", row)
    for name, result in report["service"].items():
        print(f"service {name}: {result['faces_per_s']} faces/s, p50 {result['p50_ms']} ms, "
              f"p95 {result['p95_ms']} ms, errors {result['errors']}, "
              f"CPU ms/frame {result['cpu_ms_per_frame']}, "
              f"by kind {result['by_kind']}")  # fmt: skip
    for kind in ("bare_model", "bare_model_parallel"):
        print(kind, {size: r["faces_per_s"] for size, r in report[kind]["batch_sizes"].items()})
    keys = ("ratio", "cpu_ratio", "ratio_vs_single_replica", "overhead")
    print({key: report.get(key) for key in keys})
    print(report["capacity"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
