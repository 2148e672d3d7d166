from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.settings import Settings, settings_to_env

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [name for name in Settings.model_fields if f"`EXAMDAY_{name.upper()}`" not in text]
    assert missing == []


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(ValidationError, match="placeholder secrets"):
        Settings(env="production")


def test_production_accepts_real_secrets() -> None:
    key = "q" * 43 + "="
    settings = Settings(
        env="production",
        token_signing_key="k9s-real-signing-key",
        data_master_key=key,
        pseudonym_key="real-pseudonym-key",
        regions={
            "cn-north": {
                "endpoint": "http://127.0.0.1:9000",
                "bucket": "exams-north",
                "access_key": "AKIA-real",
                "secret_key": "real-secret",
            }
        },
    )
    assert len(settings.master_key_bytes()) == 32


def test_environment_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        gateway_port=9123,
        media={"host_addresses": ["127.0.0.5"]},
        ops={"metrics_token": "a-nested-secret-token"},
    )
    for name, value in settings_to_env(original).items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_bad_ice_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMDAY_MEDIA__HOST_ADDRESSES", '["not-an-ip"]')
    with pytest.raises(ValidationError):
        Settings()
