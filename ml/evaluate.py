"""Score every pair of a labelled photo set, per detector, and show where the threshold falls.

    python -m ml.evaluate [--faces DIR] [--detector yunet|mtcnn|all] [--backend sface|facenet]
                          [--weights FILE]

DIR holds the photos and an `identities.json` mapping file name to person. For each
detector (both by default, so that a change of detector is judged on the same numbers):

  - detection on every photo, as enrolled and shrunk to a 320-px monitoring sample: a
    photo where the detector finds no face, several, or a face failing a quality gate
    is a miss (with the reason), and is left out of the pairs;
  - every pair of the photos left is scored: pairs of one person are genuine, the
    others impostors, with their margins to the backend's threshold;
  - with both detectors, templates of one against probes of the other (`yunet>mtcnn`):
    templates enrolled before a change of detector must still match after it.

The figures behind the thresholds in `ml.thresholds` come from this command. It exits 1
when a detector misses a photo or the threshold does not separate a set.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from infra.errors import ExamdayError
from infra.settings.ml import FaceSettings
from ml.images import RGBImage
from ml.pipeline import FacePipeline
from ml.templates import FaceTemplate

DEFAULT_FACES = Path("tests/fixtures/faces")
# The longest side of a monitoring sample (a 320x240 keyframe), where small faces get hard.
SAMPLE_SIDE = 320
DETECTORS: tuple[Literal["yunet", "mtcnn"], ...] = ("yunet", "mtcnn")


@dataclass(frozen=True)
class PairScore:
    first: str
    second: str
    score: float


@dataclass(frozen=True)
class PhotoDetection:
    """One photo as the detector saw it: at full size (enrolment) and as a monitoring sample."""

    name: str
    faces: int
    miss: str | None  # None, or why no template came of it: no_face, multiple_faces, a gate
    sample_faces: int  # faces found in the 320-px copy

    @property
    def sample_miss(self) -> bool:
        return self.sample_faces != 1


@dataclass(frozen=True)
class Evaluation:
    backend: str
    detector: str
    threshold: float
    photos: tuple[PhotoDetection, ...]
    genuine: tuple[PairScore, ...]
    impostor: tuple[PairScore, ...]
    templates: Mapping[str, FaceTemplate] = field(default_factory=dict, repr=False)
    identities: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def misses(self) -> int:
        return sum(photo.miss is not None for photo in self.photos)

    @property
    def sample_misses(self) -> int:
        return sum(photo.sample_miss for photo in self.photos)

    @property
    def lowest_genuine(self) -> float:
        return min(pair.score for pair in self.genuine)

    @property
    def highest_impostor(self) -> float:
        return max(pair.score for pair in self.impostor)

    @property
    def separates(self) -> bool:
        return self.highest_impostor < self.threshold <= self.lowest_genuine

    @property
    def passed(self) -> bool:
        return self.separates and not self.misses and not self.sample_misses

    @property
    def midpoint(self) -> float:
        """The threshold with equal margins on this set: only a hint with a small set."""
        return (self.lowest_genuine + self.highest_impostor) / 2


def load_identities(directory: Path) -> dict[str, str]:
    raw = json.loads((directory / "identities.json").read_text(encoding="utf-8"))
    return {str(name): str(person) for name, person in raw.items()}


def monitoring_sample(image: RGBImage) -> RGBImage:
    """The photo shrunk to a monitoring sample's longest side."""
    scale = SAMPLE_SIDE / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def evaluate(pipeline: FacePipeline, directory: Path) -> Evaluation:
    identities = load_identities(directory)
    frames = {name: pipeline.decode((directory / name).read_bytes()) for name in identities}
    names = sorted(frames)
    full = pipeline.analyse_batch([frames[name] for name in names])
    samples = pipeline.analyse_batch([monitoring_sample(frames[name]) for name in names])
    photos: list[PhotoDetection] = []
    templates: dict[str, FaceTemplate] = {}
    for name, analysis, sample in zip(names, full, samples, strict=True):
        miss = None
        try:
            face = pipeline.single_usable_face(analysis)
            templates[name] = FaceTemplate(model=pipeline.model, vector=face.embedding)
        except ExamdayError as exc:
            miss = exc.reason
        photos.append(PhotoDetection(name, len(analysis.faces), miss, len(sample.faces)))
    genuine: list[PairScore] = []
    impostor: list[PairScore] = []
    for first, second in itertools.combinations(sorted(templates), 2):
        other = templates[second]
        pair = PairScore(first, second, templates[first].similarity(other.vector, other.model))
        (genuine if identities[first] == identities[second] else impostor).append(pair)
    if not genuine or not impostor:
        raise ValueError(
            f"{directory} needs two usable photos of one person and one of another "
            f"({pipeline.detector_name} missed {[p.name for p in photos if p.miss]})"
        )
    return Evaluation(
        backend=pipeline.model.backend,
        detector=pipeline.detector_name,
        threshold=pipeline.threshold,
        photos=tuple(photos),
        genuine=tuple(genuine),
        impostor=tuple(impostor),
        templates=templates,
        identities=identities,
    )


def across(enrolled: Evaluation, probed: Evaluation) -> Evaluation:
    """Templates enrolled with one detector against probes of another (the same photos):
    what a change of detector does to templates enrolled before it. Every ordered pair
    of two photos; a photo against itself is a genuine pair too."""
    genuine: list[PairScore] = []
    impostor: list[PairScore] = []
    identities = enrolled.identities
    for first, second in itertools.product(sorted(enrolled.templates), sorted(probed.templates)):
        probe = probed.templates[second]
        pair = PairScore(
            first, second, enrolled.templates[first].similarity(probe.vector, probe.model)
        )
        (genuine if identities[first] == identities[second] else impostor).append(pair)
    return Evaluation(
        backend=enrolled.backend,
        detector=f"{enrolled.detector}>{probed.detector}",
        threshold=enrolled.threshold,
        photos=(),
        genuine=tuple(genuine),
        impostor=tuple(impostor),
    )


def report(evaluation: Evaluation) -> str:
    threshold = evaluation.threshold
    lines = [
        f"detector {evaluation.detector}, backend {evaluation.backend}, threshold {threshold:.3f}",
        "",
        f"detection ({len(evaluation.photos)} photos; a {SAMPLE_SIDE}-px sample beside each):",
    ]
    for photo in evaluation.photos:
        verdict = "ok" if photo.miss is None else f"MISS {photo.miss}"
        sample = "ok" if not photo.sample_miss else "MISS"
        lines.append(
            f"  {photo.name:>20}  faces {photo.faces}  {verdict:<22}"
            f"sample faces {photo.sample_faces}  {sample}"
        )
    lines.append(f"misses: {evaluation.misses} as enrolled, {evaluation.sample_misses} as samples")
    lines.append("")
    for title, pairs in (("genuine", evaluation.genuine), ("impostor", evaluation.impostor)):
        lines.append(f"{title} pairs ({len(pairs)}):")
        for pair in sorted(pairs, key=lambda p: p.score):
            margin = pair.score - threshold
            lines.append(f"  {pair.first:>20} {pair.second:<20} {pair.score:+.3f}  {margin:+.3f}")
    lines += [
        "",
        f"genuine  {evaluation.lowest_genuine:+.3f} .. "
        f"{max(p.score for p in evaluation.genuine):+.3f}",
        f"impostor {min(p.score for p in evaluation.impostor):+.3f} .. "
        f"{evaluation.highest_impostor:+.3f}",
        f"margins: lowest genuine {evaluation.lowest_genuine - threshold:+.3f}, "
        f"highest impostor {evaluation.highest_impostor - threshold:+.3f}",
        f"equal-margin midpoint on this set: {evaluation.midpoint:.3f}",
        "the threshold separates this set"
        if evaluation.separates
        else "THE THRESHOLD DOES NOT SEPARATE THIS SET",
    ]
    return "\n".join(lines)


def summary(evaluations: Sequence[Evaluation]) -> str:
    """The detectors side by side: misses and margins on the same photos."""
    lines = [
        f"{'detector':<12} {'misses':>6} {'sample misses':>13} {'lowest genuine':>15} "
        f"{'highest impostor':>17} {'gap':>6}"
    ]
    for e in evaluations:
        lines.append(
            f"{e.detector:<12} {e.misses:>6} {e.sample_misses:>13} "
            f"{e.lowest_genuine - e.threshold:>+15.3f} {e.highest_impostor - e.threshold:>+17.3f} "
            f"{e.lowest_genuine - e.highest_impostor:>6.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    parser.add_argument("--detector", choices=(*DETECTORS, "all"), default="all")
    parser.add_argument("--backend", choices=("sface", "facenet"), default="sface")
    parser.add_argument("--weights", type=Path, default=None, help="facenet state dict")
    args = parser.parse_args(argv)
    detectors = DETECTORS if args.detector == "all" else (args.detector,)
    evaluations = []
    for detector in detectors:
        settings = FaceSettings(
            backend=args.backend, facenet_weights=args.weights, detector=detector
        )
        evaluation = evaluate(FacePipeline(settings), args.faces)
        print(report(evaluation), end="\n\n")
        evaluations.append(evaluation)
    # Cosine similarity is symmetric: one direction says it for both.
    crossed = [across(a, b) for a, b in itertools.combinations(evaluations, 2)]
    print(summary([*evaluations, *crossed]))
    if crossed:
        print("(a>b: templates enrolled with a against probes detected with b, every pair)")
    return 0 if all(e.passed for e in evaluations) and all(e.separates for e in crossed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
