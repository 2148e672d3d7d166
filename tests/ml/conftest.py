"""Real models on real photos, loaded once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, cast

import pytest

from infra.settings.ml import FaceSettings
from ml.images import RGBImage, decode_image
from ml.pipeline import FacePipeline
from ml.templates import FaceTemplate

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"


def identities() -> dict[str, str]:
    """Photo stem -> person, from the fixture set's identities.json."""
    raw = json.loads((FACES / "identities.json").read_text(encoding="utf-8"))
    return {Path(name).stem: person for name, person in raw.items()}


def photo_bytes(stem: str) -> bytes:
    return (FACES / f"{stem}.jpg").read_bytes()


@pytest.fixture(scope="session")
def settings() -> FaceSettings:
    # CPU unless asked: the same tests check the models on a GPU machine
    # (`loadtests/face_gpu_check.sh` runs them with EXAMDAY_FACE__DEVICE=cuda).
    # The detector follows the device (`auto`) unless asked: EXAMDAY_FACE__DETECTOR=mtcnn
    # runs the same tests with MTCNN on a CPU.
    device = os.environ.get("EXAMDAY_FACE__DEVICE", "cpu")
    detector = os.environ.get("EXAMDAY_FACE__DETECTOR", "auto")
    return FaceSettings(
        device=cast(Literal["auto", "cpu", "cuda"], device),
        detector=cast(Literal["auto", "yunet", "mtcnn"], detector),
    )


@pytest.fixture(scope="session")
def pipeline(settings: FaceSettings) -> FacePipeline:
    return FacePipeline(settings)


@pytest.fixture(scope="session")
def photos(settings: FaceSettings) -> dict[str, RGBImage]:
    return {stem: decode_image(photo_bytes(stem), settings) for stem in identities()}


@pytest.fixture(scope="session")
def templates(pipeline: FacePipeline, photos: dict[str, RGBImage]) -> dict[str, FaceTemplate]:
    return {stem: pipeline.enrol(image) for stem, image in photos.items()}
