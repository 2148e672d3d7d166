"""MTCNN detection over batches of mixed sizes, and large photos."""

from __future__ import annotations

import numpy as np
import pytest

from infra.settings.ml import FaceSettings
from loadtests.synthetic import faceless, scaled
from ml.detection import MTCNNDetector
from ml.devices import resolve_device
from ml.images import RGBImage


@pytest.fixture(scope="module")
def detector(settings: FaceSettings) -> MTCNNDetector:
    return MTCNNDetector(settings, resolve_device("cpu"))


def test_mixed_sizes_in_one_batch(detector: MTCNNDetector, photos: dict[str, RGBImage]) -> None:
    frames = [photos["person_a_1"], photos["person_b_1"], faceless(), photos["person_a_1"]]
    found = detector.detect(frames)
    assert [len(faces) for faces in found] == [1, 1, 0, 1]
    assert found[0][0].box == pytest.approx(found[3][0].box)
    assert all(face.prob >= 0.9 for faces in found for face in faces)


def test_large_photos_are_detected_on_a_smaller_copy(
    photos: dict[str, RGBImage], detector: MTCNNDetector
) -> None:
    small_side = FaceSettings(detect_max_side=300)
    shrinking = MTCNNDetector(small_side, resolve_device("cpu"))
    photo = photos["person_b_1"]
    (full,) = detector.detect([photo])[0]
    (shrunk,) = shrinking.detect([photo])[0]
    # Boxes and landmarks come back in the coordinates of the original photo.
    assert np.allclose(shrunk.box, full.box, atol=0.1 * full.width)
    assert np.allclose(shrunk.landmarks, full.landmarks, atol=0.05 * full.width)


def test_frames_smaller_than_a_face_have_none(detector: MTCNNDetector) -> None:
    assert detector.detect([np.zeros((10, 10, 3), np.uint8), np.zeros((1, 500, 3), np.uint8)]) == [
        [],
        [],
    ]


def test_several_faces_come_largest_first(
    detector: MTCNNDetector, photos: dict[str, RGBImage]
) -> None:
    frame = np.full((600, 900, 3), 128, np.uint8)
    big, small = scaled(photos["impostor_1"], 0.7), scaled(photos["person_b_2"], 0.4)
    frame[: big.shape[0], : big.shape[1]] = big
    frame[: small.shape[0], 600 : 600 + small.shape[1]] = small
    faces = detector.detect([frame])[0]
    assert len(faces) == 2
    assert faces[0].width > faces[1].width
    assert faces[0].box[0] < 600 <= faces[1].box[0]
