"""The progress line: drawn on a real pseudo-terminal, silent elsewhere, rate limited."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cluster import cli
from infra.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def terminal() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """The writing side of a pseudo-terminal (isatty holds) and the reading side's fd."""
    reader, writer = os.openpty()
    stream = open(writer, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        yield stream, reader
    finally:
        stream.close()
        os.close(reader)


def _read(fd: int) -> str:
    chunks = b""
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks += chunk
    return chunks.decode()


def test_draws_rate_limited_updates_and_leaves_the_last_line(
    terminal: tuple[io.TextIOWrapper, int],
) -> None:
    stream, reader = terminal
    clock = Clock()
    with Progress("purge", stream=stream, clock=clock, environ={}) as progress:
        progress.update("1 of 10")
        for n in range(2, 10):  # all within a quarter of a second: none drawn
            clock.now += 0.02
            progress.update(f"{n} of 10")
        clock.now += 0.3
        progress.update("10 of 10")
        progress.close("done")
    out = _read(reader)
    assert "purge: 1 of 10" in out
    assert "purge: 10 of 10" in out
    assert not any(f"purge: {n} of 10" in out for n in range(2, 10))
    assert out.count("\r\x1b[2K") == 3  # first, after the quarter second, the final line
    assert out.rstrip("\r\n").endswith("purge: done")  # the pty turns \n into \r\n
    assert out.endswith("\n")


def test_final_line_drawn_even_when_the_last_update_was_held_back(
    terminal: tuple[io.TextIOWrapper, int],
) -> None:
    stream, reader = terminal
    clock = Clock()
    progress = Progress("drain", stream=stream, clock=clock, environ={})
    progress.update("a")
    progress.update("b")  # held back by the rate limit
    progress.close()
    out = _read(reader)
    assert out.rstrip("\r\n").endswith("drain: b")


@pytest.mark.parametrize(
    ("quiet", "environ"),
    [(True, {}), (False, {"EXAMDAY_QUIET": "1"})],
    ids=["--quiet", "EXAMDAY_QUIET=1"],
)
def test_silent_when_quiet(
    terminal: tuple[io.TextIOWrapper, int], quiet: bool, environ: dict[str, str]
) -> None:
    stream, reader = terminal
    with Progress("bench", stream=stream, quiet=quiet, environ=environ) as progress:
        progress.update("window 1 of 3")
    assert _read(reader) == ""


def test_silent_on_a_non_terminal() -> None:
    stream = io.StringIO()
    with Progress("loadtest", stream=stream, environ={}) as progress:
        progress.update("arrived 3/10")
        progress.close("done")
    assert stream.getvalue() == ""


@pytest.mark.parametrize(
    "words",
    [["purge", "--help"], ["bench", "--help"], ["cluster", "drain", "--help"]],
)
def test_commands_offer_quiet(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(words)
    assert "--quiet" in capsys.readouterr().out


def test_loadtest_offers_quiet() -> None:
    # Through the `examday` entry point: the loadtest's parser is found by name.
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "loadtest", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--quiet" in done.stdout
    assert "EXAMDAY_QUIET" in done.stdout
