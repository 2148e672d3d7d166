"""What a verifier replica sends back: small, picklable, and free of torch.

`ml.pipeline.FrameAnalysis` holds detector and quality objects whose modules import
torch and OpenCV; unpickling one would load them into every caller (the gateway, the
face monitor). These summaries carry what callers use: vectors, quality verdicts, pose.
`FrameSummary` has the attributes `ml.monitor.CandidateMonitor.observe` reads (`model`,
`faces`, `face.quality.ok`, `face.embedding`), so it can stand in for a `FrameAnalysis`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ml.embedding import ModelId, Reuse

if TYPE_CHECKING:
    from ml.liveness import LivenessResult
    from ml.pipeline import FaceAnalysis, FrameAnalysis, VerifyResult


@dataclass(frozen=True)
class QualitySummary:
    ok: bool
    failures: tuple[str, ...]  # failing gates, in the order `ml.quality` reports them
    yaw: float
    pitch: float


@dataclass(frozen=True, eq=False)
class FaceSummary:
    box: tuple[float, float, float, float]
    prob: float
    quality: QualitySummary
    embedding: NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class FrameSummary:
    model: ModelId
    width: int
    height: int
    faces: tuple[FaceSummary, ...]  # largest first
    # For the monitor: what the candidate's next sample may reuse, and whether this one did.
    reuse: Reuse | None = None
    reused: bool = False


@dataclass(frozen=True)
class VerifyOutcome:
    match: bool
    score: float
    threshold: float
    backend: str


@dataclass(frozen=True)
class EnrolOutcome:
    template: bytes  # `FaceTemplate.to_bytes()`
    model: ModelId
    face_px: float


@dataclass(frozen=True)
class LivenessOutcome:
    passed: bool
    reason: str
    movement: str
    excursion: float
    min_similarity: float | None


def summarise_face(face: FaceAnalysis) -> FaceSummary:
    quality = face.quality
    return FaceSummary(
        box=face.face.box,
        prob=face.face.prob,
        quality=QualitySummary(
            ok=quality.ok,
            failures=tuple(failure.gate for failure in quality.failures),
            yaw=quality.pose.yaw,
            pitch=quality.pose.pitch,
        ),
        embedding=np.asarray(face.embedding, dtype=np.float32),
    )


def summarise(frame: FrameAnalysis) -> FrameSummary:
    return FrameSummary(
        model=frame.model,
        width=frame.width,
        height=frame.height,
        faces=tuple(summarise_face(face) for face in frame.faces),
        reuse=frame.reuse,
        reused=frame.reused,
    )


def verify_outcome(result: VerifyResult) -> VerifyOutcome:
    return VerifyOutcome(result.match, result.score, result.threshold, result.backend)


def liveness_outcome(result: LivenessResult) -> LivenessOutcome:
    return LivenessOutcome(
        passed=result.passed,
        reason=result.reason,
        movement=str(result.movement),
        excursion=result.excursion,
        min_similarity=result.min_similarity,
    )
