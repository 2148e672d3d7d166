"""Bare face-model throughput: `FacePipeline.analyse_batch` (detection, quality, alignment,
embedding) on webcam-sized frames, no Ray, no gateway, no network.

    python -m loadtests.bench_face_model [--seconds 5] [--batch-sizes 1,8,32]

`run()` returns the figures as a dict; the service-level benchmark reuses it as the
baseline. Each batch size runs for at least `seconds` after one warm-up batch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ml.config import FaceSettings
from ml.images import RGBImage, decode_image
from ml.pipeline import FacePipeline

FACES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces"
FRAME_SIZE = (640, 480)  # width, height: a typical webcam frame


def webcam_frames(settings: FaceSettings) -> list[RGBImage]:
    """The fixture photos, scaled to the frame height and centred on a 640x480 canvas."""
    width, height = FRAME_SIZE
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


def run(
    batch_sizes: Sequence[int] = (1, 8, 32),
    seconds: float = 5.0,
    settings: FaceSettings | None = None,
) -> dict[str, Any]:
    settings = settings or FaceSettings()
    started = time.perf_counter()
    pipeline = FacePipeline(settings)
    load_s = time.perf_counter() - started
    frames = webcam_frames(settings)
    results = {}
    for size in batch_sizes:
        batch = [frames[i % len(frames)] for i in range(size)]
        pipeline.analyse_batch(batch)  # warm-up: first calls allocate and pick kernels
        batches = faces = 0
        started = time.perf_counter()
        while batches == 0 or time.perf_counter() - started < seconds:
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
        "model_version": pipeline.model.version,
        "device": settings.device,
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "frame": f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}",
        "model_load_s": round(load_s, 2),
        "batch_sizes": results,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--backend", choices=("sface", "facenet"), default="sface")
    parser.add_argument("--weights", type=Path, default=None, help="facenet state dict")
    args = parser.parse_args(argv)
    settings = FaceSettings(backend=args.backend, facenet_weights=args.weights)
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(json.dumps(run(sizes, args.seconds, settings), indent=2))


if __name__ == "__main__":
    main()
