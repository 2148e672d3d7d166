"""The threshold evaluation that `ml.thresholds` documents, per detector, on the fixture set."""

from __future__ import annotations

import pytest

from infra.settings.ml import FaceSettings
from ml.evaluate import evaluate, main, report
from ml.pipeline import FacePipeline
from ml.thresholds import THRESHOLDS, threshold_for
from tests.ml.conftest import FACES

# The figures recorded in ml/thresholds.py: lowest genuine, highest impostor score.
RECORDED = {"yunet": (0.624, 0.249), "mtcnn": (0.592, 0.209)}


@pytest.mark.parametrize("detector", ["yunet", "mtcnn"])
def test_the_sface_threshold_separates_the_fixture_set_with_either_detector(
    settings: FaceSettings, detector: str
) -> None:
    pipeline = FacePipeline(settings.model_copy(update={"detector": detector}))
    evaluation = evaluate(pipeline, FACES)
    print(report(evaluation))
    assert evaluation.detector == detector
    assert evaluation.threshold == threshold_for("sface").value == 0.363
    # Every photo gives one usable face, enrolled and as a 320-px monitoring sample.
    assert [photo.faces for photo in evaluation.photos] == [1] * 6
    assert (evaluation.misses, evaluation.sample_misses) == (0, 0)
    assert (len(evaluation.genuine), len(evaluation.impostor)) == (2, 13)
    assert evaluation.separates
    assert evaluation.passed
    lowest_genuine, highest_impostor = RECORDED[detector]
    assert evaluation.lowest_genuine == pytest.approx(lowest_genuine, abs=0.01)
    assert evaluation.highest_impostor == pytest.approx(highest_impostor, abs=0.01)


def test_the_cli_prints_both_detectors_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--faces", str(FACES)]) == 0
    output = capsys.readouterr().out
    assert output.count("genuine pairs (2)") == output.count("impostor pairs (13)") == 2
    assert "detector yunet" in output
    assert "detector mtcnn" in output
    assert output.count("misses: 0 as enrolled, 0 as samples") == 2
    assert output.count("the threshold separates this set") == 2
    summary = output.strip().splitlines()[-5:]
    assert summary[0].split()[:2] == ["detector", "misses"]
    rows = [line.split()[0] for line in summary[1:-1]]
    assert rows == ["yunet", "mtcnn", "yunet>mtcnn"]
    # Templates enrolled with MTCNN still match (and only match) probes found by YuNet.
    crossed = summary[3].split()
    assert float(crossed[3]) > 0.2
    assert float(crossed[4]) < -0.1


def test_every_backend_has_a_threshold() -> None:
    assert set(THRESHOLDS) == {"sface", "facenet"}
    assert not THRESHOLDS["facenet"].calibrated
