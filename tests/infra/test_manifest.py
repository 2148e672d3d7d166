"""The stack's manifest names the services' running processes, whoever started them
again: the supervisor, an operator's tool, a test with other arguments."""

from __future__ import annotations

import sys
from pathlib import Path

from infra.processes import ManagedProcess
from infra.stack import LocalStack, isolated_settings, named_process, read_manifest

SLEEP = "import time; time.sleep(120)"


def _named(stack: LocalStack, name: str) -> int | None:
    manifest = read_manifest(stack.settings.state_dir)
    assert manifest is not None
    process = named_process(manifest, name)
    return process.pid if process is not None else None


def test_the_manifest_follows_every_start_of_a_service(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path / "state")
    settings.state_dir.mkdir(parents=True)
    service = ManagedProcess("store", [sys.executable, "-c", SLEEP], tmp_path / "store.log")
    stack = LocalStack(settings, with_gateway=False, restart=None, processes=[service])
    service.start()
    assert read_manifest(settings.state_dir) is None  # written once the stack is up
    stack.write_manifest()
    fresh: ManagedProcess | None = None
    try:
        assert _named(stack, "store") == service.pid
        first = service.pid

        service.stop()
        assert _named(stack, "store") is None
        service.start()
        assert service.pid != first
        assert _named(stack, "store") == service.pid

        service.stop()
        fresh = ManagedProcess("store", [sys.executable, "-c", SLEEP], tmp_path / "store.log")
        stack.replace(service, fresh)
        assert stack.processes == [fresh]
        assert _named(stack, "store") == fresh.pid
    finally:
        stack.stop()
    assert not service.running
    assert fresh is not None
    assert not fresh.running
    assert read_manifest(settings.state_dir) is None
