"""The facenet backend loads a local state dict, or refuses to start with a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from infra.errors import ConfigError, Conflict
from infra.settings.ml import FaceSettings
from ml.facenet import FacenetEmbedder
from ml.images import RGBImage
from ml.pipeline import FacePipeline
from ml.templates import FaceTemplate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Freshly initialised weights plus a classifier head, like the published files."""
    torch.manual_seed(0)
    state = InceptionResnetV1(pretrained=None).state_dict()
    state["logits.weight"] = torch.zeros(10, 512)
    state["logits.bias"] = torch.zeros(10)
    path = tmp_path_factory.mktemp("facenet") / "inception_resnet_v1.pt"
    torch.save(state, path)
    return path


def refusal(weights: Path | None) -> str:
    with pytest.raises(ConfigError) as caught:
        FacenetEmbedder(weights, CPU)
    print(caught.value.detail)
    return caught.value.detail


def test_a_local_state_dict_embeds_faces(
    weights: Path, photos: dict[str, RGBImage], templates: dict[str, FaceTemplate]
) -> None:
    pipeline = FacePipeline(FaceSettings(device="cpu", backend="facenet", facenet_weights=weights))
    assert (pipeline.model.backend, pipeline.model.dim) == ("facenet", 512)
    assert len(pipeline.model.version) == 12
    frames = pipeline.analyse_batch([photos["person_a_1"], photos["person_b_1"]])
    vectors = [frame.faces[0].embedding for frame in frames]
    for vector in vectors:
        assert vector.shape == (512,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert not np.allclose(vectors[0], vectors[1])
    # An sface template is never scored against facenet vectors.
    with pytest.raises(Conflict):
        pipeline.verify(templates["person_a_1"], photos["person_a_2"])


def test_no_configured_path_is_a_config_error() -> None:
    assert "facenet_weights is not set" in refusal(None)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pt"
    assert f"{missing} does not exist" in refusal(missing)


def test_random_bytes_are_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "is not a torch state dict file" in refusal(junk)


def test_a_state_dict_of_another_network_is_a_config_error(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), other)
    detail = refusal(other)
    assert "is not an InceptionResnetV1 state dict" in detail
    assert "missing keys" in detail
    assert "unexpected keys" in detail


def test_tensors_of_the_wrong_shape_are_a_config_error(weights: Path, tmp_path: Path) -> None:
    state = torch.load(weights, weights_only=True)
    state["last_linear.weight"] = torch.zeros(128, 1792)
    wrong = tmp_path / "wrong_shape.pt"
    torch.save(state, wrong)
    assert "1 tensors of the wrong shape (e.g. last_linear.weight)" in refusal(wrong)


def test_cuda_is_used_where_there_is_a_gpu_and_refused_elsewhere() -> None:
    if torch.cuda.is_available():
        FacePipeline(FaceSettings(device="cuda"))  # builds: the GPU path is usable
        return
    with pytest.raises(ConfigError):
        FacePipeline(FaceSettings(device="cuda"))
