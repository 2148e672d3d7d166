"""Enrolment and verification with the real MTCNN and SFace models on real photos."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from infra.errors import Conflict, InvalidInput, MalformedInput
from loadtests.synthetic import faceless, side_by_side
from ml.embedding import ModelId
from ml.images import RGBImage
from ml.pipeline import FacePipeline
from ml.templates import FaceTemplate
from tests.ml.conftest import identities, photo_bytes

PAIRS = list(itertools.combinations(sorted(identities()), 2))
GENUINE = [pair for pair in PAIRS if identities()[pair[0]] == identities()[pair[1]]]
IMPOSTOR = [pair for pair in PAIRS if pair not in GENUINE]


def test_the_fixture_set_has_both_kinds_of_pairs() -> None:
    assert len(GENUINE) == 2
    assert len(IMPOSTOR) == 13


@pytest.mark.parametrize(("enrolled", "probe"), GENUINE)
def test_the_same_person_matches(
    enrolled: str,
    probe: str,
    pipeline: FacePipeline,
    templates: dict[str, FaceTemplate],
    photos: dict[str, RGBImage],
) -> None:
    result = pipeline.verify(templates[enrolled], photos[probe])
    print(f"genuine  {enrolled} vs {probe}: score {result.score:+.3f} margin {result.margin:+.3f}")
    assert result.match
    assert result.backend == "sface"
    assert result.threshold == pipeline.threshold


@pytest.mark.parametrize(("enrolled", "probe"), IMPOSTOR)
def test_different_people_do_not_match(
    enrolled: str,
    probe: str,
    pipeline: FacePipeline,
    templates: dict[str, FaceTemplate],
    photos: dict[str, RGBImage],
) -> None:
    result = pipeline.verify(templates[enrolled], photos[probe])
    print(f"impostor {enrolled} vs {probe}: score {result.score:+.3f} margin {result.margin:+.3f}")
    assert not result.match


def test_verification_is_symmetric_enough(
    pipeline: FacePipeline, templates: dict[str, FaceTemplate], photos: dict[str, RGBImage]
) -> None:
    forward = pipeline.verify(templates["person_b_1"], photos["person_b_2"]).score
    backward = pipeline.verify(templates["person_b_2"], photos["person_b_1"]).score
    assert forward == pytest.approx(backward, abs=1e-4)


def test_enrolment_takes_uploaded_bytes(
    pipeline: FacePipeline, templates: dict[str, FaceTemplate]
) -> None:
    template = pipeline.enrol(photo_bytes("person_a_1"))
    assert np.allclose(template.vector, templates["person_a_1"].vector, atol=1e-6)
    with pytest.raises(MalformedInput) as caught:
        pipeline.enrol(b"not a photo")
    assert caught.value.reason == "not_an_image"


def test_two_people_in_the_frame_is_multiple_faces(
    pipeline: FacePipeline, photos: dict[str, RGBImage]
) -> None:
    frame = side_by_side(photos["person_a_2"], photos["person_b_1"])
    assert len(pipeline.analyse(frame).faces) == 2
    with pytest.raises(InvalidInput) as caught:
        pipeline.enrol(frame)
    assert caught.value.reason == "multiple_faces"
    assert caught.value.extra["faces"] == 2


def test_a_frame_without_a_face_is_no_face(
    pipeline: FacePipeline, photos: dict[str, RGBImage]
) -> None:
    # Synthetic noise, and a real background: the wall left of and above a face.
    wall = np.ascontiguousarray(photos["impostor_2"][:150, :200])
    for frame in (faceless(), wall):
        with pytest.raises(InvalidInput) as caught:
            pipeline.enrol(frame)
        assert caught.value.reason == "no_face"


def test_landmarks_are_in_the_order_the_sface_alignment_expects(
    pipeline: FacePipeline, photos: dict[str, RGBImage]
) -> None:
    (face,) = pipeline.analyse(photos["impostor_1"]).faces
    eye_left, eye_right, nose, mouth_left, mouth_right = face.face.landmarks
    assert eye_left[0] < nose[0] < eye_right[0]
    assert mouth_left[0] < mouth_right[0]
    assert max(eye_left[1], eye_right[1]) < nose[1] < min(mouth_left[1], mouth_right[1])


def test_a_batch_gives_the_same_answers_as_single_frames(
    pipeline: FacePipeline, photos: dict[str, RGBImage]
) -> None:
    frames = [photos["person_a_1"], faceless(), photos["person_a_1"], photos["person_b_2"]]
    batch = pipeline.analyse_batch(frames)
    assert [len(frame.faces) for frame in batch] == [1, 0, 1, 1]
    single = pipeline.analyse(photos["person_b_2"]).faces[0]
    assert np.allclose(batch[3].faces[0].embedding, single.embedding, atol=1e-5)
    assert batch[3].faces[0].face.box == pytest.approx(single.face.box, abs=0.01)


def test_a_bad_array_is_refused(pipeline: FacePipeline) -> None:
    with pytest.raises(MalformedInput):
        pipeline.analyse(np.zeros((48, 64), dtype=np.uint8))
    assert pipeline.analyse(np.zeros((8, 8, 3), dtype=np.uint8)).faces == ()


def test_templates_round_trip_through_bytes(templates: dict[str, FaceTemplate]) -> None:
    template = templates["person_a_1"]
    again = FaceTemplate.from_bytes(template.to_bytes())
    assert again.model == template.model
    assert np.array_equal(again.vector, template.vector)
    assert len(template.to_bytes()) < 600


@pytest.mark.parametrize("cut", [0, 3, 10, -1])
def test_damaged_template_bytes_are_refused(cut: int, templates: dict[str, FaceTemplate]) -> None:
    data = templates["person_a_1"].to_bytes()
    with pytest.raises(MalformedInput) as caught:
        FaceTemplate.from_bytes(data[:cut])
    assert caught.value.reason == "bad_template"


@pytest.mark.parametrize(
    "model",
    [ModelId("facenet", "0123456789ab", 512), ModelId("sface", "another-release", 128)],
)
def test_templates_of_another_model_are_never_compared(
    model: ModelId, pipeline: FacePipeline, photos: dict[str, RGBImage]
) -> None:
    vector = np.zeros(model.dim, dtype=np.float32)
    vector[0] = 1.0
    foreign = FaceTemplate(model=model, vector=vector)
    with pytest.raises(Conflict) as caught:
        pipeline.verify(foreign, photos["person_a_1"])
    assert caught.value.reason == "template_mismatch"
    assert model.backend in caught.value.detail
