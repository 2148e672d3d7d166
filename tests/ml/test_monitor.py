"""Continuous monitoring: streams of real analysed frames through the state machine."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from infra.errors import Conflict
from loadtests.synthetic import faceless, lit, side_by_side
from ml.embedding import ModelId
from ml.images import RGBImage
from ml.monitor import CandidateMonitor, Incident, IncidentType
from ml.pipeline import FacePipeline, FrameAnalysis
from ml.templates import FaceTemplate

PERSIST = 3


@pytest.fixture(scope="module")
def frames(pipeline: FacePipeline, photos: dict[str, RGBImage]) -> dict[str, FrameAnalysis]:
    """One real analysis per kind of sample; streams repeat them."""
    kinds = {
        "A": photos["person_a_2"],  # the enrolled candidate (enrolled from person_a_1)
        "B": photos["person_b_1"],  # someone else
        "empty": faceless(),
        "both": side_by_side(photos["person_a_2"], photos["person_b_1"]),
        "dark_B": lit(photos["person_b_1"], 0.15),  # a face, but too dark to judge
    }
    return dict(zip(kinds, pipeline.analyse_batch(list(kinds.values())), strict=True))


@pytest.fixture
def monitor(templates: dict[str, FaceTemplate]) -> CandidateMonitor:
    return CandidateMonitor(templates["person_a_1"], persist_samples=PERSIST)


def run(
    monitor: CandidateMonitor, frames: dict[str, FrameAnalysis], stream: Sequence[str]
) -> list[Incident]:
    incidents: list[Incident] = []
    for index, kind in enumerate(stream):
        incidents += monitor.observe(time=10.0 * index, frame_index=index, frame=frames[kind])
    return incidents


def test_the_sample_kinds_are_what_they_claim(frames: dict[str, FrameAnalysis]) -> None:
    assert [len(frames[kind].faces) for kind in ("A", "B", "empty", "both", "dark_B")] == [
        1,
        1,
        0,
        2,
        1,
    ]
    assert not frames["dark_B"].faces[0].quality.ok


def test_a_to_b_to_nobody_raises_mismatch_then_absence_once_each(
    monitor: CandidateMonitor, frames: dict[str, FrameAnalysis]
) -> None:
    stream = ["A"] * 4 + ["B"] * 5 + ["empty"] * 5
    incidents = run(monitor, frames, stream)
    for incident in incidents:
        print(incident)
    assert [i.type for i in incidents] == [
        IncidentType.IDENTITY_MISMATCH,
        IncidentType.FACE_ABSENT,
    ]
    mismatch, absent = incidents
    assert (mismatch.frame_index, mismatch.first_seen, mismatch.severity) == (4, 40.0, "high")
    assert mismatch.score is not None
    assert mismatch.score < 0.363
    assert (absent.frame_index, absent.first_seen, absent.score) == (9, 90.0, None)
    assert monitor.active == {IncidentType.FACE_ABSENT}


@pytest.mark.parametrize("blip", ["empty", "B", "both"])
def test_a_one_sample_blip_raises_nothing(
    blip: str, monitor: CandidateMonitor, frames: dict[str, FrameAnalysis]
) -> None:
    assert run(monitor, frames, ["A", "A", blip, "A", "A", "A", blip, "A"]) == []
    assert monitor.active == frozenset()


def test_an_incident_is_raised_again_only_after_it_cleared(
    monitor: CandidateMonitor, frames: dict[str, FrameAnalysis]
) -> None:
    # Interrupted for fewer samples than PERSIST: still the same incident.
    stream = ["both"] * 4 + ["A"] * 2 + ["both"] * 4 + ["A"] * 3 + ["both"] * 3
    incidents = run(monitor, frames, stream)
    assert [(i.type, i.frame_index) for i in incidents] == [
        (IncidentType.MULTIPLE_FACES, 0),
        (IncidentType.MULTIPLE_FACES, 13),
    ]


def test_faces_too_poor_to_judge_never_count_as_a_mismatch(
    monitor: CandidateMonitor, frames: dict[str, FrameAnalysis]
) -> None:
    assert run(monitor, frames, ["A"] * 2 + ["dark_B"] * 6) == []


def test_a_template_of_another_model_is_refused(
    frames: dict[str, FrameAnalysis], templates: dict[str, FaceTemplate]
) -> None:
    own = templates["person_a_1"]
    foreign = FaceTemplate(model=ModelId("sface", "other-release", 128), vector=own.vector)
    monitor = CandidateMonitor(foreign, persist_samples=PERSIST)
    with pytest.raises(Conflict):
        monitor.observe(time=0.0, frame_index=0, frame=frames["A"])
