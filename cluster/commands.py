"""The commands the operator's CLI runs from the load tests, found by name, never imported.

`examday loadtest`, `examday up --demo` and `examday bench NAME` run code of `loadtests`,
a sibling of `cluster` that it must not import (docs/architecture.md, checked by
`lint-imports`). pyproject.toml registers that code as entry points, groups
`examday.commands` and `examday.benchmarks`; installing the project (`make install`)
writes the registry, so a new benchmark is one line there and nothing here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from infra.settings import Settings

COMMANDS = "examday.commands"
BENCHMARKS = "examday.benchmarks"


class NotRegistered(LookupError):
    """No entry point of that name in the group (or the project was installed before it was
    added to pyproject.toml)."""


def _load(group: str, name: str) -> Any:
    for entry in entry_points(group=group, name=name):
        return entry.load()
    raise NotRegistered(f"{group}: {name!r}")


def benchmarks() -> list[str]:
    return sorted(entry.name for entry in entry_points(group=BENCHMARKS))


def run_benchmark(name: str, argv: Sequence[str]) -> int:
    """Each benchmark is `main(argv)`; one that returns nothing succeeded."""
    main: Callable[[list[str]], int | None] = _load(BENCHMARKS, name)
    return main(list(argv)) or 0


def run_loadtest(argv: Sequence[str]) -> int:
    main: Callable[[list[str]], int] = _load(COMMANDS, "loadtest")
    return main(list(argv))


def run_demo(settings: Settings, stop: threading.Event) -> None:
    demo: Callable[[Settings, threading.Event], None] = _load(COMMANDS, "demo")
    demo(settings, stop)
