"""FaceSettings nests into the project's environment-driven Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings.ml import FaceSettings


class ProjectLike(BaseSettings):
    """The shape of infra.settings.Settings, with FaceSettings nested as `face`."""

    model_config = SettingsConfigDict(env_prefix="EXAMDAY_", env_nested_delimiter="__")
    face: FaceSettings = FaceSettings()


def test_face_settings_come_from_nested_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXAMDAY_FACE__BACKEND", "facenet")
    monkeypatch.setenv("EXAMDAY_FACE__FACENET_WEIGHTS", "/models/vggface2.pt")
    monkeypatch.setenv("EXAMDAY_FACE__ALLOWED_IMAGE_TYPES", '["jpeg"]')
    monkeypatch.setenv("EXAMDAY_FACE__MONITOR_PERSIST_SAMPLES", "5")
    face = ProjectLike().face
    assert face.backend == "facenet"
    assert face.facenet_weights == Path("/models/vggface2.pt")
    assert face.allowed_image_types == ("jpeg",)
    assert face.monitor_persist_samples == 5
    assert face.max_image_megapixels == 20.0


def test_a_mistyped_face_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMDAY_FACE__MIN_FACE_PIXELS", "80")
    with pytest.raises(ValidationError, match="min_face_pixels"):
        ProjectLike()


@pytest.mark.parametrize(
    "values",
    [
        {"backend": "arcface"},
        {"min_brightness": 200, "max_brightness": 100},
        {"liveness_min_frames": 10, "liveness_max_frames": 5},
        {"allowed_image_types": ("gif",)},
        {"max_image_megapixels": 0},
    ],
)
def test_inconsistent_values_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FaceSettings.model_validate(values)
