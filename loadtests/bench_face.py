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

    analyse_ms_per_frame     CPU ms to analyse one 320x240 monitoring sample on one thread
                             (torch and OpenCV), per detector side by side, per batch size
                             (goal <= 15 ms: YuNet; MTCNN is the GPU's detector)
    monitor_ms_per_still_sample
                             the same samples from a candidate who sits still: the steady
                             cost with the monitor's reuse of the last embedding (one fresh
                             embedding every EXAMDAY_VERIFIER__MONITOR_REUSE_MAX_AGE + 1)
    service_vs_model         best service faces/s / best bare model faces/s in the same
                             layout (one process per replica, same threads; goal >= 0.85)
    join_p99_ms              p99 of the join frames (enrolments through the gateway) while
                             monitoring samples flood the same replicas, per max_batch
                             (goal <= 2000)
    ratio                    best batched / max_batch 1, same replicas (batching alone)
    model_ratio              the same for the bare model, one process per replica: what
                             batching gains the model itself, before any serving cost
    ratio_vs_single_replica  best batched / one replica at max_batch 1
    overhead                 best bare model / best service
    capacity                 candidates one CPU core monitors at one sample per 10 s,
                             from the service's faces/s per core (gateway, S3 included)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import ray

from infra import progress
from infra.settings.face import VerifierSettings
from infra.settings.ml import FaceSettings
from infra.stack import LocalStack, isolated_settings
from loadtests import bench_face_model
from loadtests.bench_face_service import run_service

DETECTORS: tuple[Literal["yunet", "mtcnn"], ...] = ("yunet", "mtcnn")


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
        stages: dict[str, Any] = {}
        for detector in DETECTORS:
            _progress(f"bare model, {detector}: CPU time per stage, one thread")
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                stages[detector] = pool.apply(_stages_run, (1, batch_sizes, detector))
        _progress("bare model")
        bare = bench_face_model.run(batch_sizes, seconds, FaceSettings())
        _progress(f"bare model, {replicas} processes of {threads or 1} thread(s)")
        parallel = bare_in_processes(replicas, threads or 1, batch_sizes, seconds)
        stack = LocalStack(settings, nodes=1, with_gateway=False)
        stack.start()
        try:
            _progress("service: one replica, max_batch 1, one request at a time per replica")
            single = run_service(
                settings, _verifier(1, 1, threads, concurrency), [1] * rounds, seconds, concurrency
            )
            _progress(f"service: {replicas} replicas, max_batch {batch_sizes} in turn")
            verifier = _verifier(max(batch_sizes), replicas, threads, concurrency)
            service = run_service(
                settings, verifier, list(batch_sizes) * rounds, seconds, concurrency
            )
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


def _stages_run(
    threads: int, batch_sizes: Sequence[int], detector: Literal["yunet", "mtcnn"]
) -> dict[str, Any]:
    import cv2
    import torch

    # Process CPU time counts every torch thread, spinning ones too: measure as a replica
    # runs (which gives OpenCV as many threads as torch).
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    # The liveness choices side by side once, in the stage of the CPU's own detector.
    return bench_face_model.stages(
        batch_sizes,
        FaceSettings(device="cpu", detector=detector),
        compare_liveness=detector == "yunet",
    )


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
    parallel = report["bare_model_parallel"]["batch_sizes"]
    # The service against the bare model in the replicas' own layout.
    summary["service_vs_model"] = round(
        best / max(max(r["faces_per_s"] for r in parallel.values()), 1e-9), 3
    )
    summary["analyse_ms_per_frame"] = {
        detector: {
            size: row["analyse_ms_per_frame"] for size, row in figures["cpu_ms"]["320x240"].items()
        }
        for detector, figures in report["stages"].items()
    }
    # The same samples from a candidate who sits still (the monitor's reuse), side by side:
    # the steady cost with one fresh embedding every `monitor_reuse_max_age + 1` samples.
    summary["monitor_ms_per_still_sample"] = {
        detector: {
            size: row.get("still_ms_per_sample_steady")
            for size, row in figures["cpu_ms"]["320x240"].items()
        }
        for detector, figures in report["stages"].items()
    }
    # A join's liveness check (seven 640x480 frames): what the join lane spends per candidate.
    summary["liveness_ms_per_check"] = {
        detector: figures["liveness"]["ms_per_check"]
        for detector, figures in report["stages"].items()
    }
    # The same check by the landmarks it follows (`liveness_detector`), side by side in
    # the stage of the CPU's detector: a check's cost at the join, and whether it passed.
    stages = report["stages"]
    by_landmarks = stages.get("yunet", next(iter(stages.values()), {})).get("liveness", {})
    summary["liveness_by_landmarks"] = by_landmarks.get("by_detector", {})
    summary["join_p99_ms"] = {
        size: r["by_kind"].get("join_640x480", {}).get("p99_ms") for size, r in service.items()
    }
    if "1" in parallel and len(parallel) > 1:
        # What batching gains the model itself, in the replicas' own layout (one process
        # per replica): a service can pass it only by wasting time at batch 1.
        summary["model_ratio"] = round(
            max(r["faces_per_s"] for r in parallel.values())
            / max(parallel["1"]["faces_per_s"], 1e-9),
            3,
        )
    summary["capacity"] = {
        "cpu_cores": cores,
        "service_faces_per_s_per_core": round(best / cores, 2),
        "candidates_per_core_at_one_sample_per_10s": int(best / cores * 10),
        "bare_model_bound": int(bare / cores * 10),
    }
    return summary


def _progress(phase: str) -> None:
    # On the progress line of `examday bench` (a terminal, not quiet); standalone, a line.
    if progress.active():
        progress.note(phase)
    elif not progress.quiet_env():
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
    for detector, figures in report["stages"].items():
        for size, row in figures["cpu_ms"].items():
            print(f"bare model CPU ms, {detector}, {size}:", row)
    for name, result in report["service"].items():
        print(f"service {name}: {result['faces_per_s']} faces/s, p50 {result['p50_ms']} ms, "
              f"p95 {result['p95_ms']} ms, errors {result['errors']}, "
              f"CPU ms/frame {result['cpu_ms_per_frame']}, "
              f"by kind {result['by_kind']}")  # fmt: skip
    for kind in ("bare_model", "bare_model_parallel"):
        print(kind, {size: r["faces_per_s"] for size, r in report[kind]["batch_sizes"].items()})
    keys = (
        "analyse_ms_per_frame",
        "monitor_ms_per_still_sample",
        "liveness_ms_per_check",
        "liveness_by_landmarks",
        "service_vs_model",
        "join_p99_ms",
        "ratio",
        "model_ratio",
        "cpu_ratio",
        "ratio_vs_single_replica",
        "overhead",
    )
    print({key: report.get(key) for key in keys})
    print(report["capacity"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
