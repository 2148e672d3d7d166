"""`examday bench journal` runs end to end through the CLI against its own three
redis-servers and prints one JSON object with every policy's figures."""

from __future__ import annotations

import json

import pytest

from cluster import cli


def test_bench_journal_prints_each_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "journal", "--seconds", "0.7", "--writers", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    print(result)
    assert result["writers"] == 4
    assert set(result["policies"]) == set(result["ratio_to_off"]) == {"off", "everysec", "always"}
    for figures in result["policies"].values():
        assert figures["appends"] > 0
        assert figures["appends_per_s"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert result["ratio_to_off"]["off"] == 1.0
