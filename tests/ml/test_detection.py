"""Both detectors on batches of mixed sizes and large photos; YuNet's landmarks against MTCNN's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infra.settings.ml import FaceSettings
from loadtests.synthetic import faceless, scaled
from ml.detection import (
    CroppedLandmarks,
    Detector,
    MTCNNDetector,
    YuNetDetector,
    detector_name,
    liveness_detector_name,
    load_detector,
    load_liveness_detector,
)
from ml.devices import resolve_device
from ml.images import RGBImage, decode_image
from ml.pipeline import box_iou
from ml.pose import estimate_pose
from tests.face.conftest import jpeg
from tests.ml.conftest import identities


@pytest.fixture(scope="module", params=["mtcnn", "yunet"])
def detector(request: pytest.FixtureRequest, settings: FaceSettings) -> Detector:
    return load_detector(settings.model_copy(update={"detector": request.param}), cpu())


def cpu() -> torch.device:
    return resolve_device("cpu")


def test_mixed_sizes_in_one_batch(detector: Detector, photos: dict[str, RGBImage]) -> None:
    frames = [photos["person_a_1"], photos["person_b_1"], faceless(), photos["person_a_1"]]
    found = detector.detect(frames)
    assert [len(faces) for faces in found] == [1, 1, 0, 1]
    assert found[0][0].box == pytest.approx(found[3][0].box)
    assert all(face.prob >= 0.9 for faces in found for face in faces)
    assert found[0][0].landmarks.shape == (5, 2)


def test_large_photos_are_detected_on_a_smaller_copy(
    photos: dict[str, RGBImage], detector: Detector
) -> None:
    small_side = FaceSettings(detect_max_side=300, yunet_max_side=300)
    shrinking = load_detector(small_side.model_copy(update={"detector": detector.name}), cpu())
    photo = photos["person_b_1"]
    (full,) = detector.detect([photo])[0]
    (shrunk,) = shrinking.detect([photo])[0]
    # Boxes and landmarks come back in the coordinates of the original photo.
    assert np.allclose(shrunk.box, full.box, atol=0.1 * full.width)
    assert np.allclose(shrunk.landmarks, full.landmarks, atol=0.1 * full.width)


def test_one_person_in_a_webcam_sized_frame_is_one_face(
    detector: Detector, photos: dict[str, RGBImage]
) -> None:
    # As a camera would send it (JPEG), YuNet also finds a "face" below this one's chin,
    # scoring 0.63: under its floor.
    frame = decode_image(jpeg(scaled(photos["person_b_2"], 0.6)), FaceSettings())
    faces = detector.detect([frame])[0]
    assert len(faces) == 1, [face.prob for face in faces]


def test_frames_smaller_than_a_face_have_none(detector: Detector) -> None:
    assert detector.detect([np.zeros((10, 10, 3), np.uint8), np.zeros((1, 500, 3), np.uint8)]) == [
        [],
        [],
    ]


def test_several_faces_come_largest_first(detector: Detector, photos: dict[str, RGBImage]) -> None:
    frame = np.full((600, 900, 3), 128, np.uint8)
    big, small = scaled(photos["impostor_1"], 0.7), scaled(photos["person_b_2"], 0.4)
    frame[: big.shape[0], : big.shape[1]] = big
    frame[: small.shape[0], 600 : 600 + small.shape[1]] = small
    faces = detector.detect([frame])[0]
    assert len(faces) == 2
    assert faces[0].width > faces[1].width
    assert faces[0].box[0] < 600 <= faces[1].box[0]


def test_auto_takes_yunet_on_cpu_and_mtcnn_on_a_gpu(settings: FaceSettings) -> None:
    auto = settings.model_copy(update={"detector": "auto"})
    assert detector_name(auto, torch.device("cpu")) == "yunet"
    assert detector_name(auto, torch.device("cuda")) == "mtcnn"
    forced = settings.model_copy(update={"detector": "mtcnn"})
    assert detector_name(forced, torch.device("cpu")) == "mtcnn"
    assert isinstance(load_detector(auto, cpu()), YuNetDetector)


def test_yunet_landmarks_are_mtcnns_in_the_same_order(
    settings: FaceSettings, photos: dict[str, RGBImage]
) -> None:
    """Alignment, pose and liveness read the five landmarks: YuNet's must mean MTCNN's."""
    yunet = YuNetDetector(settings)
    mtcnn = MTCNNDetector(settings, cpu())
    stems = sorted(identities())
    frames = [photos[stem] for stem in stems]
    for stem, ours, theirs in zip(stems, yunet.detect(frames), mtcnn.detect(frames), strict=True):
        ((y,), (m,)) = (ours, theirs)
        eye_span = float(np.linalg.norm(m.landmarks[1] - m.landmarks[0]))
        # Point by point within a quarter of the eye span (a swapped pair would be a whole
        # span off): the same points, in the same order.
        distances = np.linalg.norm(y.landmarks - m.landmarks, axis=1)
        print(stem, (distances / eye_span).round(3))
        assert np.all(distances < 0.25 * eye_span), stem
        # The pose gates allow 25-30 degrees; the two detectors' poses of one still photo
        # differ by the landmarks' noise (most on the 31-px eye span of person_a_1), far
        # less than a gate. Liveness follows changes from the first frame, not angles.
        pose_y, pose_m = estimate_pose(y.landmarks), estimate_pose(m.landmarks)
        assert abs(pose_y.yaw - pose_m.yaw) < 8, stem
        assert abs(pose_y.roll - pose_m.roll) < 10, stem
        assert abs(pose_y.pitch - pose_m.pitch) < 12, stem


def test_liveness_takes_yunets_faces_with_mtcnns_landmarks_on_cpu(settings: FaceSettings) -> None:
    auto = settings.model_copy(update={"detector": "auto", "liveness_detector": "auto"})
    assert liveness_detector_name(auto, torch.device("cpu")) == "yunet+mtcnn"
    assert liveness_detector_name(auto, torch.device("cuda")) == "mtcnn"
    yunet = YuNetDetector(auto)
    composed = load_liveness_detector(auto, cpu(), yunet)
    assert isinstance(composed, CroppedLandmarks)
    assert composed._finder is yunet  # the pipeline's own YuNet, not a second copy
    same = auto.model_copy(update={"liveness_detector": "yunet"})
    assert load_liveness_detector(same, cpu(), yunet) is yunet


def test_cropped_landmarks_are_mtcnns_on_yunets_faces(
    settings: FaceSettings, photos: dict[str, RGBImage]
) -> None:
    """MTCNN on a crop around each YuNet face puts the landmarks where MTCNN over the whole
    frame does; the faces themselves (count, boxes) stay YuNet's."""
    yunet, mtcnn = YuNetDetector(settings), MTCNNDetector(settings, cpu())
    composed = CroppedLandmarks(yunet, settings, cpu())
    two = np.full((600, 900, 3), 128, np.uint8)
    big, small = scaled(photos["impostor_1"], 0.7), scaled(photos["person_b_2"], 0.4)
    two[: big.shape[0], : big.shape[1]] = big
    two[: small.shape[0], 600 : 600 + small.shape[1]] = small
    webcam = decode_image(jpeg(scaled(photos["person_b_2"], 0.6)), FaceSettings())
    frames = [*(photos[stem] for stem in sorted(identities())), two, webcam, faceless()]
    found, whole, theirs = composed.detect(frames), yunet.detect(frames), mtcnn.detect(frames)
    assert [len(faces) for faces in found] == [len(faces) for faces in whole]
    assert [len(faces) for faces in found[-3:]] == [2, 1, 0]
    for ours, plain, reference in zip(found, whole, theirs, strict=True):
        for face, yunet_face in zip(ours, plain, strict=True):
            assert face.box == yunet_face.box
            assert face.prob == yunet_face.prob
            (m,) = [r for r in reference if box_iou(r.box, face.box) > 0.5]
            eye_span = float(np.linalg.norm(m.landmarks[1] - m.landmarks[0]))
            distances = np.linalg.norm(face.landmarks - m.landmarks, axis=1)
            print((distances / eye_span).round(3))
            assert np.all(distances < 0.15 * eye_span)
