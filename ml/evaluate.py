"""Score every pair of a labelled photo set and show where the match threshold falls.

    python -m ml.evaluate [--faces DIR] [--backend sface|facenet] [--weights FILE]

DIR holds the photos and an `identities.json` mapping file name to person; every pair
of photos is scored: pairs of one person are genuine, the others impostors. The figures
behind the thresholds in `ml.thresholds` come from this command.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.settings.ml import FaceSettings
from ml.pipeline import FacePipeline

DEFAULT_FACES = Path("tests/fixtures/faces")


@dataclass(frozen=True)
class PairScore:
    first: str
    second: str
    score: float


@dataclass(frozen=True)
class Evaluation:
    backend: str
    threshold: float
    genuine: tuple[PairScore, ...]
    impostor: tuple[PairScore, ...]

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
    def midpoint(self) -> float:
        """The threshold with equal margins on this set: only a hint with a small set."""
        return (self.lowest_genuine + self.highest_impostor) / 2


def load_identities(directory: Path) -> dict[str, str]:
    raw = json.loads((directory / "identities.json").read_text(encoding="utf-8"))
    return {str(name): str(person) for name, person in raw.items()}


def evaluate(pipeline: FacePipeline, directory: Path) -> Evaluation:
    identities = load_identities(directory)
    templates = {name: pipeline.enrol((directory / name).read_bytes()) for name in identities}
    genuine: list[PairScore] = []
    impostor: list[PairScore] = []
    for first, second in itertools.combinations(sorted(templates), 2):
        other = templates[second]
        pair = PairScore(first, second, templates[first].similarity(other.vector, other.model))
        (genuine if identities[first] == identities[second] else impostor).append(pair)
    if not genuine or not impostor:
        raise ValueError(f"{directory} needs two photos of one person and one of another")
    return Evaluation(pipeline.model.backend, pipeline.threshold, tuple(genuine), tuple(impostor))


def report(evaluation: Evaluation) -> str:
    threshold = evaluation.threshold
    lines = [f"backend {evaluation.backend}, threshold {threshold:.3f}", ""]
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    parser.add_argument("--backend", choices=("sface", "facenet"), default="sface")
    parser.add_argument("--weights", type=Path, default=None, help="facenet state dict")
    args = parser.parse_args(argv)
    settings = FaceSettings(backend=args.backend, facenet_weights=args.weights)
    evaluation = evaluate(FacePipeline(settings), args.faces)
    print(report(evaluation))
    return 0 if evaluation.separates else 1


if __name__ == "__main__":
    raise SystemExit(main())
