"""One updating status line on the operator's terminal while a long command runs.

`examday loadtest`, `bench`, `purge` and `cluster drain` take minutes; without a sign
of life an operator cannot tell a slow run from a stuck one. The line is redrawn in
place with a carriage return (plain ANSI, no dependency) on stderr, so stdout stays
the command's result (JSON, a summary) and can be piped.

Nothing is written unless stderr is a terminal and quiet mode is off (`--quiet` on
each command, or `EXAMDAY_QUIET=1` for CI): a log file or a CI console would
otherwise fill with hundreds of half-lines, and the command prints its own summary
at the end anyway, so on a non-terminal there is no final line either. Redraws are
limited to `MAX_PER_S` a second (a fleet of thousands would otherwise redraw on
every event); the last line is always drawn at the end and left in place.

A command's code several layers down (a benchmark's rounds) reports with `note`,
which goes to the progress line opened around it, or nowhere when none is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

MAX_PER_S = 4.0
QUIET_ENV = "EXAMDAY_QUIET"
QUIET_HELP = f"no progress line on the terminal (also {QUIET_ENV}=1)"
# Carriage return, then erase the line: a shorter text leaves no tail of the longer one.
_REDRAW = "\r\x1b[2K"

_current: Progress | None = None


def quiet_env(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(QUIET_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no")


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)


class Progress:
    """`update(text)` redraws `label: text`, at most `MAX_PER_S` a second; `close()` draws
    the last text given and ends the line. Safe to call from several threads.

    With `render`, `update()` without a text draws `render()`, which may use `noted`: the
    last `note()` made by code running inside the `with` block."""

    def __init__(
        self,
        label: str,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
        max_per_s: float = MAX_PER_S,
        render: Callable[[], str] | None = None,
    ) -> None:
        self.label = label
        self.render = render
        self.noted = ""
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.min_interval_s = 1.0 / max_per_s
        self.enabled = not quiet and not quiet_env(environ) and _is_tty(self.stream)
        self.started = clock()
        self._last_drawn: float | None = None
        self._text = ""
        self._drawn_text: str | None = None
        self._closed = False
        self._lock = threading.Lock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def update(self, text: str | None = None) -> None:
        if text is None:
            text = self.render() if self.render is not None else self._text
        with self._lock:
            self._text = text
            if not self.enabled or self._closed:
                return
            now = self.clock()
            if self._last_drawn is not None and now - self._last_drawn < self.min_interval_s:
                return  # kept: drawn by a later update or by close()
            self._draw(now)

    def close(self, text: str | None = None) -> None:
        """Draw the final text (the last update's when None) and leave it on its line."""
        global _current
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if text is not None:
                self._text = text
            if self.enabled:
                if self._drawn_text != self._text or self._last_drawn is None:
                    self._draw(self.clock())
                self.stream.write("\n")
                self.stream.flush()
        if _current is self:
            _current = None

    def __enter__(self) -> Progress:
        global _current
        _current = self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self, now: float) -> None:
        line = f"{self.label}: {self._text}" if self._text else self.label
        width = _width(self.stream)
        if len(line) >= width:  # a wrapped line cannot be redrawn with a carriage return
            line = line[: max(width - 2, 1)] + "…"
        self.stream.write(_REDRAW + line)
        self.stream.flush()
        self._last_drawn = now
        self._drawn_text = self._text


def active() -> bool:
    """A progress line is open and drawn: notes go there instead of lines of their own."""
    return _current is not None and _current.enabled


def note(text: str) -> None:
    """Update the progress line opened around the caller (`with Progress(...)`), if any."""
    progress = _current
    if progress is not None:
        progress.noted = text
        progress.update(None if progress.render is not None else text)


async def follow(progress: Progress, stop: asyncio.Event, every_s: float = 1.0) -> None:
    """Redraw the progress's `render()` every `every_s` until `stop` is set (then once more):
    elapsed time moves even when nothing else does."""
    while not stop.is_set():
        progress.update()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    progress.update()


def ticking(progress: Progress, every_s: float = 1.0) -> threading.Event:
    """`follow` on a daemon thread, for synchronous commands; set the event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            progress.update()

    threading.Thread(target=loop, name="progress", daemon=True).start()
    return stop


def clock_text(seconds: float) -> str:
    whole = max(int(seconds), 0)
    return f"{whole // 60}:{whole % 60:02d}"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size().columns or 80
