"""Child processes that never outlive their parent.

Each child runs in its own process group (so Ctrl-C in a terminal reaches only
the supervisor, which then stops children in order) and asks the kernel to
send it SIGTERM when the supervisor dies (PR_SET_PDEATHSIG), so even a
SIGKILLed supervisor leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.errors import DependencyDown

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    os.setpgid(0, 0)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


class ManagedProcess:
    """One supervised child: start, wait until healthy, stop (TERM, then KILL)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        # Called after every start, whoever starts it (the stack's supervisor, a test
        # restarting a service): `LocalStack` writes its manifest's new pid there.
        self.on_started: Callable[[], None] | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        """The exit status once the child has ended (negative: the signal that ended it)."""
        return self._popen.poll() if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_child_setup,
            )
        if self.on_started is not None:
            self.on_started()

    def wait_healthy(self, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise DependencyDown(
                    f"{self.name} exited during start-up; see {self.log_path}",
                    reason="service_start_failed",
                    service=self.name,
                )
            if check():
                return
            time.sleep(0.2)
        self.stop()
        raise DependencyDown(
            f"{self.name} not healthy after {timeout:.0f}s; see {self.log_path}",
            reason="service_start_timeout",
            service=self.name,
        )

    def stop(self, timeout: float = 15.0) -> None:
        popen = self._popen
        if popen is None or popen.poll() is not None:
            return
        self._signal_group(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(popen.pid, signal.SIGKILL)
            popen.wait(5)
        # The leader is gone; anything left in its group is ours to end.
        self._signal_group(popen.pid, signal.SIGKILL)

    def kill_leftovers(self) -> None:
        """After the leader died on its own: end what it left in its group (a Redis
        rewrite child, a server's helper) so that a restart finds its ports free."""
        if self._popen is not None and self._popen.poll() is not None:
            self._signal_group(self._popen.pid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def free_port_block(size: int, low: int, high: int, *, also_offset: int | None = None) -> int:
    """A base port such that base..base+size-1 (and, if asked, the same block shifted
    by also_offset: SeaweedFS puts gRPC at port+10000) are all free on loopback."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - size)
        ports = list(range(base, base + size))
        if also_offset:
            ports += [p + also_offset for p in ports]
        if all(_bindable(p) for p in ports):
            return base
    raise OSError(f"no free block of {size} ports in {low}-{high}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
