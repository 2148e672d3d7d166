"""`examday cluster plan`: nodes per node type from the measured costs in loadtests/costs.json
and the launcher manifest's node shapes, with the assumptions printed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cluster import capacity, cli, validate


@pytest.fixture(scope="module")
def costs() -> dict[str, object]:
    return capacity.read_costs(capacity.COSTS)


def _assume(candidates: int, share: float = 1.0) -> capacity.Assumptions:
    return capacity.Assumptions(candidates=candidates, media_share=share, sample_every_s=10)


def test_the_costs_file_holds_every_figure_the_plan_needs(costs: dict[str, object]) -> None:
    need = capacity.cores_needed(costs, _assume(1000))
    assert set(need) == {"gateway+rooms", "media", "ingest", "face"}
    assert all(cores > 0 for cores in need.values())


def test_work_scales_with_candidates_and_media_share(costs: dict[str, object]) -> None:
    small = capacity.cores_needed(costs, _assume(10_000))
    large = capacity.cores_needed(costs, _assume(20_000))
    for part, cores in small.items():
        assert large[part] == pytest.approx(2 * cores)
    silent = capacity.cores_needed(costs, _assume(10_000, share=0.0))
    assert silent["media"] == 0
    assert silent["face"] == 0
    assert silent["gateway+rooms"] == small["gateway+rooms"]


def test_socket_heartbeats_are_planned_at_their_own_measured_cost(
    costs: dict[str, object],
) -> None:
    socket = capacity.cores_needed(costs, _assume(10_000))
    http = capacity.cores_needed(costs, replace(_assume(10_000), heartbeats="http"))
    # Both figures come from one `bench gateway` run; the socket's beats cost less.
    assert socket["gateway+rooms"] < http["gateway+rooms"]
    assert {k: v for k, v in socket.items() if k != "gateway+rooms"} == {
        k: v for k, v in http.items() if k != "gateway+rooms"
    }


def test_planned_nodes_cover_the_work_within_the_manifest(costs: dict[str, object]) -> None:
    launcher = validate.load_yaml(validate.LAUNCHER)
    a = _assume(50_000, share=0.5)
    plans = {p.node_type: p for p in capacity.plan(costs, launcher, a)}
    assert set(plans) == set(launcher["available_node_types"]) - {launcher["head_node_type"]}
    for name, p in plans.items():
        shape = launcher["available_node_types"][name]
        assert p.nodes >= shape["min_workers"]
        assert p.nodes * shape["resources"]["CPU"] * a.utilisation >= p.cores_needed
        assert p.gpus == p.nodes * shape["resources"].get("GPU", 0)
    assert plans["gpu_worker"].gpus >= 1


def test_plan_command_prints_assumptions_costs_and_nodes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["cluster", "plan", "--candidates", "2000", "--media-share", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "media_share = 0.5" in out
    assert "media_streams_per_core" in out
    assert "cpu_worker" in out
    assert "gpu_worker" in out


def test_a_plan_beyond_max_workers_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["cluster", "plan", "--candidates", "100000000"])
    assert code == 1
    assert "ABOVE max_workers" in capsys.readouterr().out


def test_bad_or_missing_costs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(capacity.CostsError, match="missing"):
        capacity.read_costs(tmp_path / "none.json")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 0, "costs": {}}))
    with pytest.raises(capacity.CostsError, match="version 0"):
        capacity.read_costs(old)
    partial = {"version": capacity.COSTS_VERSION, "costs": {}}
    with pytest.raises(capacity.CostsError, match="heartbeats_per_s_per_core"):
        capacity.cores_needed(partial, _assume(10))


def test_bad_flags_are_usage_errors() -> None:
    for argv in (["--candidates", "0"], ["--candidates", "5", "--media-share", "1.5"]):
        with pytest.raises(SystemExit) as usage:
            cli.main(["cluster", "plan", *argv])
        assert usage.value.code == 2
