from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from actors.updates.signing import DEV_SEED, ManifestSigner
from infra.errors import ConfigError, Unavailable
from infra.settings import DEV_MASTER_KEY, Settings, settings_to_env

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [name for name in Settings.model_fields if f"`EXAMDAY_{name.upper()}`" not in text]
    assert missing == []


KEY = "q" * 43 + "="  # 32 bytes, urlsafe base64
REAL: dict[str, Any] = {
    "token_signing_key": "k9s-real-signing-key-of-32-bytes!",
    "data_master_key": KEY,
    "pseudonym_key": "real-pseudonym-key-of-32-bytes!!",
    "update_signing_key": KEY,
    "audit_signing_key": KEY,
    "turn": {"shared_secret": "real-turn-shared-secret-32-bytes!"},
    "regions": {
        "cn-north": {
            "endpoint": "http://127.0.0.1:9000",
            "bucket": "exams-north",
            "access_key": "AKIA-real",
            "secret_key": "real-secret",
        }
    },
}
PRODUCTION: dict[str, Any] = {
    **REAL,
    "env": "production",
    "ops": {"metrics_token": "m" * 32},
    "public_origins": ["https://Exam.example.cn:443/"],
    "turn": {
        "shared_secret": "real-turn-shared-secret-32-bytes!",
        "urls": ["turn:turn.example.cn:3478?transport=udp"],
    },
}


def test_production_refuses_placeholder_secrets() -> None:
    with pytest.raises(ValidationError, match="placeholder secrets"):
        Settings(env="production")


@pytest.mark.parametrize("env", ["test", "production"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("token_signing_key", "dev-token-signing-key-not-for-production"),
        ("token_signing_key", "a-31-byte-token-signing-key-xxx"),
        ("pseudonym_key", "change-me-change-me-change-me-change-me"),
        ("pseudonym_key", "short"),
        ("data_master_key", DEV_MASTER_KEY),
        ("data_master_key", "q" * 42),  # 31 bytes
        ("update_signing_key", "dev-" + KEY),
        ("update_signing_key", "c2hvcnQ="),
        ("data_master_keys_previous", f"{KEY},{DEV_MASTER_KEY}"),
        ("turn", {"shared_secret": "dev-turn-shared-secret-not-for-production"}),
    ],
)
def test_outside_development_placeholder_and_short_keys_refuse_to_load(
    env: str, name: str, value: str | dict[str, str]
) -> None:
    values = {**PRODUCTION, "env": env, name: value}
    if isinstance(value, dict):
        values["turn"] = {**PRODUCTION["turn"], **value}
    with pytest.raises(ValidationError, match="placeholder secrets") as refused:
        Settings(**values)
    message = str(refused.value)
    secret = value["shared_secret"] if isinstance(value, dict) else value
    weak = "turn.shared_secret" if name == "turn" else name
    assert f"development: {weak}" in message  # only the weak one is named...
    assert secret not in message  # ...and never its value


def test_development_keeps_its_placeholders() -> None:
    assert Settings(env="development").token_signing_key.get_secret_value().startswith("dev-")


def test_test_settings_refuse_placeholder_s3_credentials() -> None:
    placeholder_store = {"endpoint": "http://127.0.0.1:9000", "bucket": "exams-north"}
    with pytest.raises(ValidationError, match=r"regions\.cn-north\.access_key"):
        Settings(**{**REAL, "env": "test", "regions": {"cn-north": placeholder_store}})


@pytest.mark.parametrize("missing", ["ops", "update_signing_key", "public_origins"])
def test_production_requires_metrics_token_update_key_and_origins(missing: str) -> None:
    values = {name: value for name, value in PRODUCTION.items() if name != missing}
    with pytest.raises(ValidationError, match="production requires"):
        Settings(**values)


def test_production_refuses_the_loopback_turn_relay() -> None:
    # A candidate at home reaches no 127.0.0.1: production names its TURN servers, or
    # says that it runs none.
    values = {**PRODUCTION, "turn": {"shared_secret": "real-turn-shared-secret-32-bytes!"}}
    with pytest.raises(ValidationError, match=r"production requires turn\.urls"):
        Settings(**values)
    no_turn = {**values["turn"], "embedded": False}
    assert Settings(**{**values, "turn": no_turn}).turn.client_urls == ()


def test_production_accepts_real_secrets() -> None:
    settings = Settings(**PRODUCTION)
    assert len(settings.master_key_bytes()) == 32
    assert settings.allowed_origins == {"https://exam.example.cn"}


def test_the_dev_update_key_signs_in_development_only() -> None:
    assert ManifestSigner.from_settings(Settings(env="development")).key_id
    assert ManifestSigner.from_settings(Settings(**{**REAL, "env": "test"}))._key is not None
    unset = ManifestSigner.from_settings(
        Settings(**{**REAL, "env": "test", "update_signing_key": None})
    )
    with pytest.raises(Unavailable):
        unset.public_key()
    dev_seed = base64.urlsafe_b64encode(DEV_SEED).decode()
    with pytest.raises(ConfigError) as refused:
        ManifestSigner.from_settings(
            Settings(**{**REAL, "env": "test", "update_signing_key": dev_seed})
        )
    assert refused.value.reason == "dev_signing_key"


@pytest.mark.parametrize("origin", ["exam.example.cn", "ftp://exam.example.cn", "https://x.cn/app"])
def test_public_origins_are_bare_origins(origin: str) -> None:
    with pytest.raises(ValidationError, match="origin"):
        Settings(public_origins=[origin])


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
