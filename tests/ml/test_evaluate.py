"""The threshold evaluation that `ml.thresholds` documents, run on the fixture set."""

from __future__ import annotations

import pytest

from ml.evaluate import evaluate, main, report
from ml.pipeline import FacePipeline
from ml.thresholds import THRESHOLDS, threshold_for
from tests.ml.conftest import FACES


def test_the_sface_threshold_separates_the_fixture_set(pipeline: FacePipeline) -> None:
    evaluation = evaluate(pipeline, FACES)
    print(report(evaluation))
    assert evaluation.threshold == threshold_for("sface").value == 0.363
    assert (len(evaluation.genuine), len(evaluation.impostor)) == (2, 13)
    assert evaluation.separates
    # The figures recorded in ml/thresholds.py are the ones this pipeline measures.
    assert evaluation.lowest_genuine == pytest.approx(0.592, abs=0.01)
    assert evaluation.highest_impostor == pytest.approx(0.209, abs=0.01)


def test_the_cli_prints_the_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--faces", str(FACES)]) == 0
    output = capsys.readouterr().out
    assert "genuine pairs (2)" in output
    assert "impostor pairs (13)" in output
    assert "the threshold separates this set" in output


def test_every_backend_has_a_threshold() -> None:
    assert set(THRESHOLDS) == {"sface", "facenet"}
    assert not THRESHOLDS["facenet"].calibrated
