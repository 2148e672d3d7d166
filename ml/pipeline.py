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

import numpy as np
import torch

from infra.errors import InvalidInput, MalformedInput
from infra.settings.ml import FaceSettings
from ml.detection import DetectedFace, Detector, load_detector
from ml.devices import resolve_device
from ml.embedding import Embedder, ModelId, Vectors
from ml.images import RGBImage, decode_image
from ml.quality import QualityReport, assess_quality
from ml.templates import FaceTemplate
from ml.thresholds import threshold_for

ImageInput: TypeAlias = bytes | RGBImage


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
        self._liveness: Detector | None = (
            self._detector if self.settings.liveness_detector == self.detector_name else None
        )

    def decode(self, data: bytes) -> RGBImage:
        return decode_image(data, self.settings)

    def analyse(self, image: ImageInput) -> FrameAnalysis:
        return self.analyse_batch([image])[0]

    def analyse_batch(
        self, images: Sequence[ImageInput], *, liveness: bool = False
    ) -> list[FrameAnalysis]:
        """Every face of every image, detected and embedded in batches.

        Bytes are decoded first; one bad image fails the whole call, so decode untrusted
        uploads one by one with `decode` when each needs its own answer. `liveness`: the
        frames of a liveness check, detected by `settings.liveness_detector`.
        """
        frames = [self._as_frame(image) for image in images]
        with self._lock:
            detector = self._liveness_detector() if liveness else self._detector
            detections = detector.detect(frames)
            aligned = [
                self._embedder.align(frame, face)
                for frame, faces in zip(frames, detections, strict=True)
                for face in faces
            ]
            vectors = iter(self._embedder.embed(aligned))
        return [
            FrameAnalysis(
                model=self.model,
                width=frame.shape[1],
                height=frame.shape[0],
                faces=tuple(
                    FaceAnalysis(face, assess_quality(frame, face, self.settings), next(vectors))
                    for face in faces
                ),
            )
            for frame, faces in zip(frames, detections, strict=True)
        ]

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
            chosen = self.settings.model_copy(update={"detector": self.settings.liveness_detector})
            self._liveness = load_detector(chosen, self.device)
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
