"""Scrubbing free text: personal data goes, the rest of a log line stays readable."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from infra.pseudonym import Pseudonyms
from infra.scrub import Scrubber

TOKEN = "eyJzaWQiOiJhYmMiLCJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWc"


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        ("mail wei.zhang@example.com now", ["wei.zhang@example.com"], ["mail", "now"]),
        ("call +86 138 0013 8000 or 13800138000", ["138 0013 8000", "13800138000"], ["call"]),
        ("us (555) 123-4567 / 555-123-4567", ["123-4567"], ["us"]),
        ("Authorization: Bearer abcdefghijklmnop", ["abcdefghijklmnop"], ["Authorization"]),
        ("token=s3cr3t-value&x=1 password: hunter22", ["s3cr3t-value", "hunter22"], ["x=1"]),
        (f"resume with {TOKEN}", [TOKEN, TOKEN.split(".")[1]], ["resume with"]),
        ("candidate no 7731 exam_no=EX2025A", ["7731", "EX2025A"], ["candidate no"]),
        ('{"name": "Li Na", "userName": "lina"}', ["Li Na", "lina"], ['"name"']),
        ("the device DEV-42-ABCD crashed", ["DEV-42-ABCD"], ["crashed"]),
        ("Zhang Wei opened question 3; wei left", ["Zhang", "Wei", "wei left"], ["question 3"]),
    ],
)
def test_personal_data_is_scrubbed(text: str, gone: list[str], kept: list[str]) -> None:
    scrubber = Scrubber.for_batch(
        device_id="DEV-42-ABCD", token=TOKEN, name="Zhang Wei", numbers=["7731"]
    )
    scrubbed = scrubber.scrub(text)
    for secret in gone:
        assert secret not in scrubbed, scrubbed
    for word in kept:
        assert word in scrubbed, scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "at app.Main.run(Main.kt:42) after 1234 ms on 2025-06-01 12:00:01",
        "GET /v1/me 200 build 3.1.0 (20250601) took 15 ms",  # addresses: see test_ip_*
        "screen question-12 opened, state ok, 3 of 40 answered",
    ],
)
def test_ordinary_log_text_is_left_alone(text: str) -> None:
    assert Scrubber.for_batch(device_id="DEV-42-ABCD", name="Zhang Wei").scrub(text) == text


def test_pseudonyms_are_keyed_stable_and_separate_by_purpose() -> None:
    first = Pseudonyms(SecretStr("key-one"))
    assert first.device("dev-1") == Pseudonyms(SecretStr("key-one")).device("dev-1")
    assert first.device("dev-1") != Pseudonyms(SecretStr("key-two")).device("dev-1")
    assert first.device("dev-1") != first.session("dev-1")
    assert "dev-1" not in first.device("dev-1")
