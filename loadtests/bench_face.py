"""`examday bench face`: the face verifier service end to end, next to the bare model.

In one run, against a private stack on loopback (Redis, SeaweedFS, one Ray node), for
each batch size a gateway of its own (a uvicorn process) with a verifier pool of that
`max_batch`, all with the same replicas (plus one phase of a single replica at
max_batch 1, the naive service), and the same closed-loop load generator:
`concurrency` organiser enrolments in flight (`PUT .../candidates/{cid}/face`, 640x480
webcam JPEGs of the fixture faces: decode, detection, quality, embedding, a sealed
template written to the region's S3 and a Redis record, per request). The bare model
(`loadtests.bench_face_model.run`, same frames, no Ray, no HTTP) runs first, alone.

    ratio     = best batched service faces/s / batch-1 service faces/s, same replicas
    ratio_vs_single_replica = the same over one replica taking one request at a time
    overhead  = best bare-model faces/s / best service faces/s, the bare model taken at
                its best of: one process with torch's default threads, or one process per
                replica with the replicas' threads, side by side
    capacity  = candidates one CPU core monitors at one sample per 10 s, from the
                service's faces/s per core of this machine (gateway, Redis, S3 included)

`--target URL --username U --password P` measures one running gateway (an organiser
account of it) instead; its own batching is what it is, so there is no ratio then.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import ray
from PIL import Image

from actors.face_pool import pool_key
from actors.face_settings import VerifierSettings
from api.staff import StaffRegistry
from infra import raycluster, services
from infra import redis as redis_conn
from infra.errors import DependencyDown
from infra.processes import free_port
from infra.redis import text
from infra.settings import Settings, settings_to_env
from infra.stack import LocalStack, isolated_settings
from infra.telemetry import actor_call
from loadtests import bench_face_model
from loadtests.httpload import problem_reason, run_closed_loop
from ml.config import FaceSettings

CANDIDATES = 2000  # one enrolment per candidate at a time: the service refuses overlaps
WARMUP_S = 6.0


def webcam_jpegs() -> list[bytes]:
    jpegs = []
    for frame in bench_face_model.webcam_frames(FaceSettings()):
        out = io.BytesIO()
        Image.fromarray(frame).save(out, "JPEG", quality=90)
        jpegs.append(out.getvalue())
    return jpegs


async def _login(http: aiohttp.ClientSession, username: str, password: str) -> dict[str, str]:
    body = {"username": username, "password": password}
    async with http.post("/v1/staff/sessions", json=body) as response:
        assert response.status == 201, await response.text()
        return {"Authorization": f"Bearer {(await response.json())['token']}"}


async def _exam(http: aiohttp.ClientSession, organiser: dict[str, str], region: str) -> str:
    exam_id = f"face{secrets.token_hex(3)}"
    now = datetime.now(UTC)
    body = {
        "id": exam_id,
        "title": "Face benchmark",
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=3)).isoformat(),
        "region": region,
        "room_capacity": 500,
    }
    async with http.post("/v1/exams", json=body, headers=organiser) as response:
        assert response.status == 201, await response.text()
    rows = ["exam_no,candidate_no,name,date_of_birth,room,guardian_consent"]
    rows += [f"{exam_id},{n},Candidate {n},2000-01-01,r{n // 500}," for n in range(CANDIDATES)]
    async with http.post(
        f"/v1/exams/{exam_id}/roster",
        data="\n".join(rows).encode(),
        headers={**organiser, "Content-Type": "text/csv"},
    ) as response:
        assert response.status == 200, await response.text()
    return exam_id


async def _measure(
    url: str, organiser_login: tuple[str, str], region: str, seconds: float, concurrency: int
) -> dict[str, Any]:
    jpegs = webcam_jpegs()
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency + 8)
    async with aiohttp.ClientSession(url, timeout=timeout, connector=connector) as http:
        organiser = await _login(http, *organiser_login)
        exam_id = await _exam(http, organiser, region)
        async with http.get(f"/v1/exams/{exam_id}/rooms/r0", headers=organiser) as response:
            cids = list((await response.json())["roster"])
        cids += await _more_cids(http, organiser, exam_id)
        headers = {**organiser, "Content-Type": "image/jpeg"}

        async def enrol(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
            path = f"/v1/exams/{exam_id}/candidates/{cids[n % len(cids)]}/face"
            async with session.put(path, data=jpegs[n % len(jpegs)], headers=headers) as answer:
                return answer.status, await problem_reason(answer)

        # Models loaded, replicas up and the first batches run before anything counts.
        await run_closed_loop(http, enrol, concurrency=concurrency, seconds=WARMUP_S)
        measured = await run_closed_loop(http, enrol, concurrency=concurrency, seconds=seconds)
    summary = measured.summary()
    summary["faces_per_s"] = summary["req_per_s"]  # each enrolment is exactly one face
    return summary


async def _more_cids(
    http: aiohttp.ClientSession, organiser: dict[str, str], exam_id: str
) -> list[str]:
    cids: list[str] = []
    for room in range(1, CANDIDATES // 500):
        async with http.get(f"/v1/exams/{exam_id}/rooms/r{room}", headers=organiser) as answer:
            cids += list((await answer.json())["roster"])
    return cids


async def _organiser(settings: Settings) -> tuple[str, str]:
    redis = redis_conn.connect(settings)
    username, password = f"bench-{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    try:
        await StaffRegistry(redis).create(username, password, "organiser", None)
    finally:
        await redis.aclose()
    return username, password


def _service_phase(
    settings: Settings, verifier: VerifierSettings, seconds: float, concurrency: int
) -> dict[str, Any]:
    phase = settings.model_copy(update={"verifier": verifier, "gateway_port": free_port()})
    gateway = services.gateway_process(phase, {**os.environ, **settings_to_env(phase)})
    gateway.start()
    try:
        try:
            gateway.wait_healthy(lambda: services.gateway_healthy(phase), 120)
        except DependencyDown:
            print(gateway.log_path.read_text()[-4000:], file=sys.stderr)
            raise
        login = asyncio.run(_organiser(phase))
        result = asyncio.run(_measure(phase.gateway_url, login, "cn-north", seconds, concurrency))
    finally:
        gateway.stop()
        loads = _remove_pool(phase)
    result["replicas"] = {
        name: {
            k: load[k]
            for k in ("frames", "batches", "largest_batch", "refused", "seconds_per_frame")
        }
        for name, load in loads.items()
    }
    return result


def _remove_pool(settings: Settings) -> dict[str, Any]:
    """Kill a phase's pool and replicas (the next phase gets the CPUs); their last loads."""
    raycluster.connect(settings)
    loads: dict[str, Any] = {}
    pool = settings.verifier.pool_name
    for name in [*asyncio.run(_replica_names(settings)), pool]:
        try:
            actor = ray.get_actor(name, namespace=settings.ray_namespace)
        except ValueError:
            continue
        if name != pool:
            loads[name] = ray.get(actor_call(actor.load), timeout=30)
        ray.kill(actor, no_restart=True)
    return loads


async def _replica_names(settings: Settings) -> list[str]:
    redis = redis_conn.connect(settings)
    try:
        return [text(m) for m in await redis.smembers(pool_key(settings.verifier.pool_name))]
    finally:
        await redis.aclose()


def run_local(
    batch_sizes: Sequence[int], seconds: float, concurrency: int, replicas: int, threads: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="examday-bench-face-") as state:
        settings = isolated_settings(
            Path(state), env="development", cookie_secure=False, trace_file=None
        )
        _progress("bare model")
        bare_seconds = min(seconds, 8.0)
        bare = bench_face_model.run(batch_sizes, bare_seconds, FaceSettings())
        _progress(f"bare model, {replicas} processes of {threads or 1} thread(s)")
        parallel = bare_in_processes(replicas, threads or 1, batch_sizes, bare_seconds)
        stack = LocalStack(settings, nodes=1, with_gateway=False)
        stack.start()
        service = {}
        phases = [("single_replica_batch_1", 1, 1)] if replicas > 1 else []
        phases += [(str(size), size, replicas) for size in batch_sizes]
        try:
            for label, size, count in phases:
                _progress(f"service {label}: max_batch {size}, {count} replica(s)")
                verifier = VerifierSettings(
                    pool_name=f"bench-face-{secrets.token_hex(3)}",
                    max_batch=size,
                    max_queue=max(64, 2 * concurrency),
                    min_replicas=count,
                    max_replicas=count,
                    num_cpus=min(1.0, settings.ray_node_cpus / count),
                    torch_threads=threads,
                )
                service[label] = _service_phase(settings, verifier, seconds, concurrency)
                service[label].update(max_batch=size, replica_count=count)
        finally:
            if ray.is_initialized():
                ray.shutdown()
            stack.stop()
    return {"bare_model": bare, "bare_model_parallel": parallel, "service": service}


def _bare_worker(threads: int, batch_sizes: Sequence[int], seconds: float, out: Connection) -> None:
    import torch

    torch.set_num_threads(threads)
    out.send(bench_face_model.run(batch_sizes, seconds, FaceSettings()))


def bare_in_processes(
    processes: int, threads: int, batch_sizes: Sequence[int], seconds: float
) -> dict[str, Any]:
    """The bare model on the replicas' CPU budget: one process per replica, side by side."""
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in range(processes)]
    workers = [
        context.Process(target=_bare_worker, args=(threads, batch_sizes, seconds, send))
        for _, send in pipes
    ]
    for worker in workers:
        worker.start()
    results = [receive.recv() for receive, _ in pipes]
    for worker in workers:
        worker.join(timeout=30)
    return {
        "processes": processes,
        "torch_threads": threads,
        "batch_sizes": {
            str(size): {
                "faces_per_s": round(
                    sum(r["batch_sizes"][str(size)]["faces_per_s"] for r in results), 2
                )
            }
            for size in batch_sizes
        },
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
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight")
    parser.add_argument("--batch-sizes", default="1,8,32", help="verifier max_batch per phase")
    parser.add_argument("--replicas", type=int, default=2, help="verifier replicas per phase")
    parser.add_argument("--torch-threads", type=int, default=0, help="per replica; 0: Ray's")
    parser.add_argument("--target", help="measure this running gateway instead")
    parser.add_argument("--username", help="an organiser of --target")
    parser.add_argument("--password", help="that organiser's password")
    parser.add_argument("--region", default="cn-north", help="region of the --target exam")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    if args.seconds <= 0 or args.concurrency < 1 or args.replicas < 1 or min(sizes) < 1:
        parser.error("seconds, concurrency, replicas and batch sizes must be positive")
    if args.target:
        if not (args.username and args.password):
            parser.error("--target needs --username and --password of an organiser")
        login = (args.username, args.password)
        measured = asyncio.run(
            _measure(args.target, login, args.region, args.seconds, args.concurrency)
        )
        report: dict[str, Any] = {"target": args.target, "service": {"target": measured}}
    else:
        report = run_local(sizes, args.seconds, args.concurrency, args.replicas, args.torch_threads)
        report.update(summarise(report, args.concurrency))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, result in report["service"].items():
        print(
            f"max_batch {name:>6}: {result['faces_per_s']:>6} faces/s  "
            f"p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  errors {result['errors']}"
        )
    if "bare_model" in report:
        for kind in ("bare_model", "bare_model_parallel"):
            for size, result in report[kind]["batch_sizes"].items():
                print(f"{kind} batch {size:>3}: {result['faces_per_s']:>6} faces/s")
        print(
            f"ratio {report.get('ratio')}  ratio_vs_single_replica "
            f"{report.get('ratio_vs_single_replica')}  overhead {report['overhead']}"
        )
        print(json.dumps(report["capacity"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
