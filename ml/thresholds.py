"""Match thresholds, one per backend, and the evidence behind each.

A score is the cosine similarity of two unit vectors; `score >= threshold` is a match.

sface: 0.363
    The threshold OpenCV publishes for SFace cosine similarity (opencv_zoo
    face_recognition_sface, calibrated on LFW: thousands of pairs). Our own six fixture
    photos cannot calibrate a false-accept rate; `python -m ml.evaluate` checks that the
    threshold still separates them with this pipeline (int8 model), with either detector's
    landmarks (no photo missed by either, enrolled or as a 320-px sample):

        YuNet  genuine   (2 pairs)   0.624 .. 0.769   lowest margin +0.261
               impostor (13 pairs)  -0.084 .. 0.249   highest margin -0.114
        MTCNN  genuine   (2 pairs)   0.592 .. 0.756   lowest margin +0.229
               impostor (13 pairs)  -0.052 .. 0.209   highest margin -0.154

    The gap between the lowest genuine and the highest impostor score is the same with
    both (0.375 and 0.383): YuNet's alignment moves both sides up a little.

    Every genuine pair passes and every impostor pair fails with a wide margin on both
    sides; the midpoint of the fixture gap (0.401, 0.436 with YuNet) would be stricter. Exams
    care most about impersonation, but one centre's light and cameras differ from LFW:
    re-run the evaluation on a few hundred consented local pairs before changing it.

facenet: 0.40 (not calibrated here)
    No InceptionResnetV1 weights can be had offline, so nothing was measured. 0.40 equals
    a Euclidean distance of 1.10 between unit vectors, the distance threshold commonly
    used with facenet-pytorch's VGGFace2 weights on LFW. Run `python -m ml.evaluate
    --backend facenet --weights FILE` with the weights you deploy, then update it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from infra.errors import ConfigError


@dataclass(frozen=True)
class MatchThreshold:
    backend: str
    value: float
    calibrated: bool  # measured with this pipeline on real genuine and impostor pairs


THRESHOLDS = MappingProxyType(
    {
        "sface": MatchThreshold(backend="sface", value=0.363, calibrated=True),
        "facenet": MatchThreshold(backend="facenet", value=0.40, calibrated=False),
    }
)


def threshold_for(backend: str) -> MatchThreshold:
    try:
        return THRESHOLDS[backend]
    except KeyError:
        raise ConfigError(f"No match threshold is defined for face backend {backend!r}.") from None
