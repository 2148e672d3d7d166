"""`examday bench`, `loadtest` and `up --demo` reach the load tests through the entry-point
registry of pyproject.toml, so the CLI imports nothing of them (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cluster import cli, commands

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"


def _benchmark_modules() -> set[str]:
    """Every `loadtests/bench_<name>.py` that has a `main`: a benchmark one can run."""
    names = set()
    for path in LOADTESTS.glob("bench_*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            names.add(path.stem.removeprefix("bench_"))
    return names


def test_every_benchmark_is_registered() -> None:
    assert _benchmark_modules() <= set(commands.benchmarks())
    assert {"gateway", "media", "face", "ingest"} <= set(commands.benchmarks())


def test_an_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "nosuch"]) == 2
    assert "no benchmark 'nosuch'" in capsys.readouterr().err
    assert cli.main(["bench", "../fleet"]) == 2


def test_bench_help_lists_the_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "-h"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for name in commands.benchmarks():
        assert name in shown


def test_loadtest_and_demo_are_registered(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["loadtest", "-h"])
    assert exited.value.code == 0
    assert "--candidates" in capsys.readouterr().out
    assert callable(commands._load(commands.COMMANDS, "demo"))
    with pytest.raises(commands.NotRegistered):
        commands._load(commands.COMMANDS, "nosuch")
