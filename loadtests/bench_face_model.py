"""Bare face-model throughput: `FacePipeline.analyse_batch` (detection, quality, alignment,
embedding) on camera frames, no Ray, no gateway, no network.

    python -m loadtests.bench_face_model [--seconds 5] [--batch-sizes 1,8,32] [--stages]
                                         [--device auto|cpu|cuda] [--detector auto|yunet|mtcnn]

The frames are the load's mix (`FRAME_MIX`): at volume the verifier sees continuous
monitoring, one sample of each candidate's 320x240 camera stream every few seconds for
the whole exam, plus a few 640x480 verification frames per candidate at join time; 9
monitoring samples per verification frame understates the monitoring share (a 3-hour
exam sampled every 10 s is about 1000 samples per candidate), which favours neither
side: big frames batch worse. Frames enter batches in that order, as they would arrive.

`run()` returns the figures as a dict; the service-level benchmark reuses it as the
baseline. Each batch size runs for at least `seconds` after one warm-up batch.
`stages()` is the CPU time per frame of each stage (detection, embedding) at each batch
size and frame size: what batching can and cannot save; and the CPU time of a join's
liveness check (`_liveness`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from infra.settings.ml import FaceSettings
from loadtests.synthetic import SWEEP, turn_head
from ml.detection import liveness_detector_name
from ml.embedding import Reuse
from ml.images import RGBImage, decode_image
from ml.liveness import Challenge, LivenessChecker, Movement
from ml.pipeline import FacePipeline

FACES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces"
FRAME_SIZE = (640, 480)  # width, height: a join-time verification frame
MONITOR_SIZE = (320, 240)  # a monitoring sample of the camera stream
MONITOR_PER_VERIFICATION = 9
FRAME_MIX = (
    f"{MONITOR_PER_VERIFICATION} monitoring samples {MONITOR_SIZE[0]}x{MONITOR_SIZE[1]} per "
    f"verification frame {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, one face each"
)


def is_verification(n: int) -> bool:
    """Whether the n-th frame of the load is a verification frame (the rest: monitoring)."""
    return n % (MONITOR_PER_VERIFICATION + 1) == 0


def webcam_frames(
    settings: FaceSettings, frame_size: tuple[int, int] = FRAME_SIZE
) -> list[RGBImage]:
    """The fixture photos, scaled to the frame height and centred on a canvas of that size."""
    width, height = frame_size
    frames = []
    for path in sorted(FACES.glob("*.jpg")):
        photo = decode_image(path.read_bytes(), settings)
        scale = min(height / photo.shape[0], width / photo.shape[1])
        size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
        resized = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        canvas = np.full((height, width, 3), 110, dtype=np.uint8)
        left, top = (width - size[0]) // 2, (height - size[1]) // 2
        canvas[top : top + size[1], left : left + size[0]] = resized
        frames.append(canvas)
    return frames


def mixed_frames(settings: FaceSettings) -> list[RGBImage]:
    """One cycle of the load's frames, in arrival order (see `FRAME_MIX`)."""
    large, small = webcam_frames(settings), webcam_frames(settings, MONITOR_SIZE)
    count = len(large) * (MONITOR_PER_VERIFICATION + 1)
    return [
        large[n % len(large)] if is_verification(n) else small[n % len(small)] for n in range(count)
    ]


def run(
    batch_sizes: Sequence[int] = (1, 8, 32),
    seconds: float = 5.0,
    settings: FaceSettings | None = None,
) -> dict[str, Any]:
    settings = settings or FaceSettings()
    started = time.perf_counter()
    pipeline = FacePipeline(settings)
    load_s = time.perf_counter() - started
    frames = itertools.cycle(mixed_frames(settings))
    results = {}
    for size in batch_sizes:
        pipeline.analyse_batch(list(itertools.islice(frames, size)))  # warm-up: kernels
        batches = faces = 0
        started = time.perf_counter()
        while batches == 0 or time.perf_counter() - started < seconds:
            batch = list(itertools.islice(frames, size))
            faces += sum(len(frame.faces) for frame in pipeline.analyse_batch(batch))
            batches += 1
        elapsed = time.perf_counter() - started
        results[str(size)] = {
            "batches": batches,
            "frames_per_s": round(batches * size / elapsed, 2),
            "faces_per_s": round(faces / elapsed, 2),
            "ms_per_batch": round(1000 * elapsed / batches, 1),
            "ms_per_frame": round(1000 * elapsed / (batches * size), 1),
        }
    return {
        "backend": pipeline.model.backend,
        "detector": pipeline.detector_name,
        "model_version": pipeline.model.version,
        "device": settings.device,
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "frame_mix": FRAME_MIX,
        "model_load_s": round(load_s, 2),
        "batch_sizes": results,
    }


def _cpu_ms(call: Callable[[], object], per: int, repeats: int) -> float:
    """Least process CPU time of `repeats` calls, per item: other processes' load (this
    machine is shared) stretches wall time but hardly the CPU time a call needs."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return round(1000 * best / max(per, 1), 2)


def _still(
    pipeline: FacePipeline, batch: list[Any], repeats: int, reuse_max_age: int
) -> dict[str, float]:
    """A monitoring sample of a candidate who sits still: the next sample of each frame (the
    same scene with a camera sensor's noise, sigma 2 grey levels) sent with what the last
    one left (`ml.embedding.Reuse`), so that the embedding is taken where the face still
    matches, not computed; and the steady cost the monitor pays, one fresh embedding every
    `reuse_max_age + 1` samples (`EXAMDAY_VERIFIER__MONITOR_REUSE_MAX_AGE`).
    `still_reused_share` says how many samples did take it."""
    none: list[Reuse | None] = [None] * len(batch)
    hints = [frame.reuse for frame in pipeline.analyse_batch(batch, reuse=none)]
    noise = np.random.default_rng(7)
    following = [
        np.clip(frame + noise.normal(0.0, 2.0, frame.shape), 0, 255).astype(np.uint8)
        for frame in batch
    ]
    fresh = _cpu_ms(partial(pipeline.analyse_batch, following, reuse=none), len(batch), repeats)
    reused = _cpu_ms(partial(pipeline.analyse_batch, following, reuse=hints), len(batch), repeats)
    taken = pipeline.analyse_batch(following, reuse=hints)
    steady = (reuse_max_age * reused + fresh) / (reuse_max_age + 1)
    return {
        "still_reused_share": round(sum(f.reused for f in taken) / len(taken), 3),
        "still_ms_per_reused_sample": reused,
        "still_ms_per_sample_steady": round(steady, 2),
    }


def _liveness(
    pipeline: FacePipeline, settings: FaceSettings, repeats: int, compare: bool
) -> dict[str, Any]:
    """CPU ms of one liveness check at the join: a head turn in seven 640x480 frames,
    detected by `liveness_detector` and each frame's face embedded, all seven in one batch
    (the join lane's cost per candidate, beside a verification's one frame); and, if
    `compare`, side by side, the same check with each choice of `liveness_detector`, with
    whether it passed and how far the estimated head turned (`yunet` alone sees too
    little of the turn). The configured choice is measured once, among the others."""
    frame = webcam_frames(settings)[0]
    (face,) = pipeline.analyse(frame).faces
    frames = [turn_head(frame, face.face, angle) for angle in SWEEP]
    challenge = Challenge(movement=Movement.TURN_LEFT, nonce="bench-liveness")
    configured = liveness_detector_name(settings, pipeline.device)
    by_detector = {}
    for choice in ("mtcnn", "yunet+mtcnn", "yunet") if compare else (configured,):
        chosen = FacePipeline(settings.model_copy(update={"liveness_detector": choice}))
        checker = LivenessChecker(chosen)
        result = checker.check(challenge, frames)
        by_detector[choice] = {
            "ms_per_check": _cpu_ms(partial(checker.check, challenge, frames), 1, repeats),
            "passed": result.passed,
            "turn_deg": round(result.excursion, 1),
        }
    return {
        "frames": len(frames),
        "frame": "640x480",
        "detector": configured,
        "passed": by_detector[configured]["passed"],
        "ms_per_check": by_detector[configured]["ms_per_check"],
        **({"by_detector": by_detector} if compare else {}),
    }


def stages(
    batch_sizes: Sequence[int] = (1, 8, 32),
    settings: FaceSettings | None = None,
    repeats: int = 5,
    reuse_max_age: int = 5,
    compare_liveness: bool = True,
) -> dict[str, Any]:
    """CPU ms per frame of detection and of the whole analysis, and per face of embedding,
    for each frame size and batch size (one face per frame), with `settings.detector`;
    for monitoring samples, also what a candidate who sits still costs (`_still`); and a
    liveness check's (`_liveness`, each choice of its landmarks if `compare_liveness`)."""
    settings = settings or FaceSettings()
    pipeline = FacePipeline(settings)
    detector, embedder = pipeline._detector, pipeline._embedder
    figures: dict[str, Any] = {}
    for frame_size in (MONITOR_SIZE, FRAME_SIZE):
        frames = webcam_frames(settings, frame_size)
        rows = {}
        for size in batch_sizes:
            batch = [frames[i % len(frames)] for i in range(size)]
            found = detector.detect(batch)
            aligned = [
                embedder.align(f, faces[0]) for f, faces in zip(batch, found, strict=True) if faces
            ]
            rows[str(size)] = {
                "detect_ms_per_frame": _cpu_ms(partial(detector.detect, batch), size, repeats),
                "embed_ms_per_face": _cpu_ms(
                    partial(embedder.embed, aligned), len(aligned), repeats
                ),
                "analyse_ms_per_frame": _cpu_ms(
                    partial(pipeline.analyse_batch, batch), size, repeats
                ),
            }
            if frame_size == MONITOR_SIZE:
                rows[str(size)].update(_still(pipeline, batch, repeats, reuse_max_age))
        figures[f"{frame_size[0]}x{frame_size[1]}"] = rows
    return {
        "detector": pipeline.detector_name,
        "torch_threads": torch.get_num_threads(),
        "cpu_ms": figures,
        "liveness": _liveness(pipeline, settings, repeats, compare_liveness),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--backend", choices=("sface", "facenet"), default="sface")
    parser.add_argument("--weights", type=Path, default=None, help="facenet state dict")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--detector", choices=("auto", "yunet", "mtcnn"), default="auto")
    parser.add_argument("--stages", action="store_true", help="CPU time per stage instead")
    args = parser.parse_args(argv)
    settings = FaceSettings(
        backend=args.backend,
        facenet_weights=args.weights,
        device=args.device,
        detector=args.detector,
    )
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    figures = stages(sizes, settings) if args.stages else run(sizes, args.seconds, settings)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
