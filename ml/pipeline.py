"""The face pipeline: detection, quality, alignment and embedding, batched.

One `FacePipeline` per process or Ray actor: it loads its models once, at construction.
Calls are synchronous and CPU/GPU bound (run them in an executor from async code); a lock
serialises the model calls, since OpenCV and torch modules are not safe to share between
threads.

Errors from `enrol` and `verify` (besides the intake errors of `ml.images` when given
bytes): `InvalidInput` with reason `no_face`, `multiple_faces`, or the failing quality
gate of `ml.quality`; `Conflict(reason="template_mismatch")` for a template of another
model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from infra.errors import InvalidInput, MalformedInput
from infra.settings.ml import FaceSettings
from ml.detection import DetectedFace, Detector, load_detector, load_liveness_detector
from ml.devices import resolve_device
from ml.embedding import Embedder, ModelId, Reuse, Vectors
from ml.images import RGBImage, decode_image
from ml.quality import QualityReport, assess_quality
from ml.templates import FaceTemplate
from ml.thresholds import threshold_for

ImageInput: TypeAlias = bytes | RGBImage

# A monitoring sample takes the last embedding (`ml.embedding.Reuse`) only when its one
# face barely moved, its box overlapping the last embedded one by this much (intersection
# over union; a head turning or leaning moves it more) ...
REUSE_MIN_IOU = 0.8
# ... and the face looks the same: the mean absolute difference of the two grey thumbnails
# (0-255). Another person in the same seat differs by tens (`tests/ml/test_reuse.py`); the
# same face re-encoded by the camera, by a few.
REUSE_MAX_DIFF = 6.0
SIGNATURE_SIDE = 16


@dataclass(frozen=True, eq=False)
class FaceAnalysis:
    face: DetectedFace  # box, prob, landmarks
    quality: QualityReport
    embedding: Vectors  # (dim,), unit length


@dataclass(frozen=True, eq=False)
class FrameAnalysis:
    model: ModelId
    width: int
    height: int
    faces: tuple[FaceAnalysis, ...]  # largest first
    # Monitoring samples analysed with `reuse`: what the next sample of the candidate may
    # reuse (None unless exactly one face), and whether this one reused the last embedding.
    reuse: Reuse | None = None
    reused: bool = False


@dataclass(frozen=True)
class VerifyResult:
    match: bool
    score: float
    threshold: float
    backend: str

    @property
    def margin(self) -> float:
        return self.score - self.threshold


def load_embedder(settings: FaceSettings, device: torch.device) -> Embedder:
    # Imported here so that a process only loads the backend it uses.
    if settings.backend == "facenet":
        from ml.facenet import FacenetEmbedder

        return FacenetEmbedder(settings.facenet_weights, device, margin=settings.facenet_margin)
    from ml.sface import SFaceEmbedder

    return SFaceEmbedder(device)


class FacePipeline:
    def __init__(
        self,
        settings: FaceSettings | None = None,
        *,
        detector: Detector | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings or FaceSettings()
        self.device = resolve_device(self.settings.device)
        self._detector = detector or load_detector(self.settings, self.device)
        self._embedder = embedder or load_embedder(self.settings, self.device)
        self.model = ModelId(self._embedder.name, self._embedder.version, self._embedder.dim)
        self.detector_name = self._detector.name
        self.threshold = threshold_for(self.model.backend).value
        self._lock = threading.Lock()
        self._liveness: Detector | None = None  # loaded on the first liveness check

    @property
    def detector(self) -> Detector:
        return self._detector

    def decode(self, data: bytes) -> RGBImage:
        return decode_image(data, self.settings)

    def analyse(self, image: ImageInput) -> FrameAnalysis:
        return self.analyse_batch([image])[0]

    def analyse_batch(
        self,
        images: Sequence[ImageInput],
        *,
        liveness: bool = False,
        reuse: Sequence[Reuse | None] | None = None,
    ) -> list[FrameAnalysis]:
        """Every face of every image, detected and embedded in batches.

        Bytes are decoded first; one bad image fails the whole call, so decode untrusted
        uploads one by one with `decode` when each needs its own answer. `liveness`: the
        frames of a liveness check, detected by `settings.liveness_detector`. `reuse`:
        monitoring samples, each with what its candidate's last sample left (or None); a
        sample whose one face is still that face takes its embedding (`reusable`).
        """
        frames = [self._as_frame(image) for image in images]
        hints = list(reuse) if reuse is not None else [None] * len(frames)
        if len(hints) != len(frames):
            raise ValueError("analyse_batch: one reuse hint per image")
        with self._lock:
            detector = self._liveness_detector() if liveness else self._detector
            detections = detector.detect(frames)
            signatures: list[NDArray[np.uint8] | None] = [
                signature(frame, faces[0]) if reuse is not None and len(faces) == 1 else None
                for frame, faces in zip(frames, detections, strict=True)
            ]
            reused = [
                hint is not None and sig is not None and reusable(hint, faces[0], sig)
                for hint, sig, faces in zip(hints, signatures, detections, strict=True)
            ]
            aligned = [
                self._embedder.align(frame, face)
                for frame, faces, skip in zip(frames, detections, reused, strict=True)
                if not skip
                for face in faces
            ]
            vectors = iter(self._embedder.embed(aligned))
        results = []
        for frame, faces, hint, sig, skip in zip(
            frames, detections, hints, signatures, reused, strict=True
        ):
            embeddings = [hint.embedding] if skip and hint else [next(vectors) for _ in faces]
            analysed = tuple(
                FaceAnalysis(face, assess_quality(frame, face, self.settings), embedding)
                for face, embedding in zip(faces, embeddings, strict=True)
            )
            left = None
            if sig is not None:
                age = hint.age + 1 if skip and hint else 0
                left = Reuse(faces[0].box, sig, analysed[0].embedding, age)
            results.append(
                FrameAnalysis(
                    model=self.model,
                    width=frame.shape[1],
                    height=frame.shape[0],
                    faces=analysed,
                    reuse=left,
                    reused=skip,
                )
            )
        return results

    def enrol(self, image: ImageInput) -> FaceTemplate:
        """A template from a photo with exactly one face that passes every quality gate."""
        face = self.single_usable_face(self.analyse(image))
        return FaceTemplate(model=self.model, vector=face.embedding)

    def verify(self, template: FaceTemplate, image: ImageInput) -> VerifyResult:
        template.check_compatible(self.model)  # before spending any CPU on the image
        face = self.single_usable_face(self.analyse(image))
        score = template.similarity(face.embedding, self.model)
        return VerifyResult(
            match=score >= self.threshold,
            score=score,
            threshold=self.threshold,
            backend=self.model.backend,
        )

    @staticmethod
    def single_usable_face(frame: FrameAnalysis) -> FaceAnalysis:
        if not frame.faces:
            raise InvalidInput("No face was found in the image.", reason="no_face")
        if len(frame.faces) > 1:
            raise InvalidInput(
                f"{len(frame.faces)} faces were found; exactly one person must be in view.",
                reason="multiple_faces",
                faces=len(frame.faces),
            )
        face = frame.faces[0]
        face.quality.raise_for_failure()
        return face

    def _liveness_detector(self) -> Detector:
        if self._liveness is None:  # under the lock: loaded once, on the first check
            self._liveness = load_liveness_detector(self.settings, self.device, self._detector)
        return self._liveness

    def _as_frame(self, image: ImageInput) -> RGBImage:
        if isinstance(image, bytes):
            return self.decode(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise MalformedInput(
                f"A frame must be an RGB uint8 array (H, W, 3), not {image.dtype} {image.shape}.",
                reason="not_an_image",
            )
        return image


def signature(image: RGBImage, face: DetectedFace) -> NDArray[np.uint8]:
    """The face's box, grey and shrunk to a few pixels a side: what tells the same face
    in the same light from another one, or the same one lit or turned otherwise."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in face.box)
    x1, y1 = min(max(x1, 0), width - 1), min(max(y1, 0), height - 1)
    x2, y2 = max(min(x2, width), x1 + 1), max(min(y2, height), y1 + 1)
    grey = cv2.cvtColor(np.ascontiguousarray(image[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (SIGNATURE_SIDE, SIGNATURE_SIDE), interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.uint8)


def reusable(last: Reuse, face: DetectedFace, sig: NDArray[np.uint8]) -> bool:
    """Whether `face` is the face `last` was embedded from, barely moved and unchanged."""
    if box_iou(last.box, face.box) < REUSE_MIN_IOU or last.signature.shape != sig.shape:
        return False
    diff = np.abs(last.signature.astype(np.int16) - sig.astype(np.int16))
    return float(diff.mean()) <= REUSE_MAX_DIFF


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
