"""Continuous monitoring: one candidate's camera, one analysed sample at a time.

Whoever samples the stream (every N seconds) runs `FacePipeline.analyse_batch` and feeds
each result to the candidate's `CandidateMonitor.observe`, which returns the incidents
raised by that sample. Pure logic: no models, no clock, no I/O.

Conditions of a sample:

    face_absent        no face
    multiple_faces     more than one face
    identity_mismatch  faces, but none that passes the quality gates matches the
                       enrolled template; a sample whose faces all fail a gate (too
                       dark, turned away, ...) says nothing about identity either way

Hysteresis: a condition must hold for `persist_samples` consecutive samples before its
incident is raised, and it is raised once; it re-arms only after it has been absent for
`persist_samples` consecutive samples. A one-sample blip raises nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from ml.templates import FaceTemplate
from ml.thresholds import threshold_for

if TYPE_CHECKING:
    # A type name only: monitoring must not load torch and the models.
    from ml.pipeline import FrameAnalysis


class IncidentType(StrEnum):
    FACE_ABSENT = "face_absent"
    MULTIPLE_FACES = "multiple_faces"
    IDENTITY_MISMATCH = "identity_mismatch"


SEVERITY = MappingProxyType(
    {
        IncidentType.FACE_ABSENT: "medium",
        IncidentType.MULTIPLE_FACES: "high",
        IncidentType.IDENTITY_MISMATCH: "high",
    }
)


@dataclass(frozen=True)
class Incident:
    type: IncidentType
    severity: str
    first_seen: float  # sample time of the first sample of the streak
    frame_index: int  # evidence: the frame of that first sample
    score: float | None  # identity_mismatch: best similarity to the template in that frame


@dataclass
class _Condition:
    """Hysteresis of one condition; the first sample of the current streak is the evidence."""

    persist: int
    active: bool = False
    run: int = 0  # consecutive samples agreeing with "change state"
    evidence: tuple[float, int, float | None] = (0.0, 0, None)

    def update(self, present: bool | None, evidence: tuple[float, int, float | None]) -> bool:
        """Feed one sample (None: no opinion); True when the condition is raised now."""
        if present is None:
            return False
        if present == self.active:
            self.run = 0  # the state holds: any streak towards a change is broken
            return False
        if self.run == 0:
            self.evidence = evidence
        self.run += 1
        if self.run < self.persist:
            return False
        self.active, self.run = present, 0
        return present


class CandidateMonitor:
    def __init__(
        self, template: FaceTemplate, *, persist_samples: int, threshold: float | None = None
    ) -> None:
        self._template = template
        self._threshold = (
            threshold if threshold is not None else threshold_for(template.model.backend).value
        )
        self._conditions = {kind: _Condition(persist_samples) for kind in IncidentType}

    @property
    def active(self) -> frozenset[IncidentType]:
        return frozenset(kind for kind, condition in self._conditions.items() if condition.active)

    def observe(self, time: float, frame_index: int, frame: FrameAnalysis) -> list[Incident]:
        score = self._best_score(frame)
        mismatch = None if score is None else score < self._threshold
        states = {
            IncidentType.FACE_ABSENT: not frame.faces,
            IncidentType.MULTIPLE_FACES: len(frame.faces) > 1,
            IncidentType.IDENTITY_MISMATCH: False if not frame.faces else mismatch,
        }
        raised = []
        for kind, present in states.items():
            condition = self._conditions[kind]
            if condition.update(present, (time, frame_index, score)):
                first_seen, evidence_frame, evidence_score = condition.evidence
                raised.append(
                    Incident(
                        type=kind,
                        severity=SEVERITY[kind],
                        first_seen=first_seen,
                        frame_index=evidence_frame,
                        score=evidence_score if kind is IncidentType.IDENTITY_MISMATCH else None,
                    )
                )
        return raised

    def _best_score(self, frame: FrameAnalysis) -> float | None:
        """Best similarity of a usable face to the template; None if no face is usable."""
        scores = [
            self._template.similarity(face.embedding, frame.model)
            for face in frame.faces
            if face.quality.ok
        ]
        return max(scores, default=None)
