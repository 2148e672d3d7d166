"""An embedded examday: every service as a supervised child of one process.

`LocalStack.start()` brings up Redis, SeaweedFS, the Ray head, the TURN relay
(coturn, where installed), more Ray nodes, then the gateway, each checked healthy
before the next depends on it; `stop()` ends them in reverse order. A manifest in
the state directory lets `examday status`, `examday down` and the load tester's
sampler find a running stack; it is written again at every start of a service,
whoever starts it, since a manifest naming a dead pid names, once pids wrap,
somebody else's process.

Once up, a `Supervisor` thread restarts the stateful services (Redis, SeaweedFS)
and the TURN relay when they die, with bounded exponential back-off, on the same
port and data directory: their data is on disk (Redis's AOF, SeaweedFS's volumes),
so a restart loses nothing, and the platform's clients reconnect by themselves. `stop()` halts it
first, so that nothing `examday down` ends is brought back.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pydantic import SecretStr

from infra import services
from infra.objectstore import ObjectStores
from infra.processes import ManagedProcess, free_port, free_port_block, port_open
from infra.settings import RegionStore, Settings, settings_to_env

MANIFEST_NAME = "stack.json"
# The services a supervisor brings back: the ones whose state is on disk, and the TURN
# relay (stateless, but nothing else brings it back and a candidate behind a strict NAT
# has no other way in). Ray nodes keep their state in memory (a new head is a new
# cluster) and the gateway is stateless.
SUPERVISED = ("redis", "seaweedfs", "turn")
# `examday up --nodes N`: the head on 127.0.0.2, workers on 127.0.0.3 and .4.
MAX_LOCAL_NODES = 1 + services.MAX_LOOPBACK_WORKERS


@dataclass(frozen=True)
class RestartPolicy:
    """Back-off of a supervisor: first_delay_s doubling up to max_delay_s per restart of
    a service within window_s; after max_restarts there it gives that service up (a
    crash loop wants an operator, not a hotter loop)."""

    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    max_restarts: int = 8
    window_s: float = 300.0
    poll_s: float = 0.2

    def delay(self, recent: int) -> float:
        return float(min(self.first_delay_s * 2**recent, self.max_delay_s))


class Supervisor(threading.Thread):
    """Restarts the stack's supervised services that exit, each line logged.

    The thread itself starts the new children, and PR_SET_PDEATHSIG fires when the
    *thread* that forked a child ends: so it stays alive (idle) after giving a
    service up, and `LocalStack.stop()` halts it, stops the services, then joins it.
    """

    def __init__(
        self,
        stack: LocalStack,
        policy: RestartPolicy,
        log: Callable[[str], None],
    ) -> None:
        super().__init__(name="examday-supervisor", daemon=True)
        self.stack = stack
        self.policy = policy
        self.log = log
        self.given_up: set[str] = set()
        self.restarts: dict[str, deque[float]] = {}
        self._halted = threading.Event()
        # Held while a child is started, so that halt() returns only when none will be.
        self._lock = threading.Lock()

    def halt(self) -> None:
        with self._lock:
            self._halted.set()

    def run(self) -> None:
        while not self._halted.wait(self.policy.poll_s):
            for process in self.stack.processes:
                if process.name not in SUPERVISED or process.running:
                    continue
                if process.name in self.given_up:
                    continue
                try:
                    self._revive(process)
                except Exception as exc:  # a failed start is retried, never fatal here
                    self.log(f"examday: restarting {process.name} failed: {exc!r}")

    def _revive(self, process: ManagedProcess) -> None:
        now = time.monotonic()
        times = self.restarts.setdefault(process.name, deque())
        while times and now - times[0] > self.policy.window_s:
            times.popleft()
        if len(times) >= self.policy.max_restarts:
            self.given_up.add(process.name)
            self.log(
                f"examday: ERROR {process.name} died {len(times)} times within"
                f" {self.policy.window_s:.0f}s; giving up, see {process.log_path}"
            )
            return
        delay = self.policy.delay(len(times))
        self.log(
            f"examday: {process.name} (pid {process.pid}) exited with {process.returncode};"
            f" restarting in {delay:g}s (restart {len(times) + 1} of at most"
            f" {self.policy.max_restarts} within {self.policy.window_s:.0f}s)"
        )
        process.kill_leftovers()
        if self._halted.wait(delay):
            return
        with self._lock:
            if self._halted.is_set():
                return
            times.append(time.monotonic())
            process.start()  # the stack's manifest follows (ManagedProcess.on_started)
        self.log(f"examday: {process.name} restarted, pid {process.pid}")


@dataclass
class LocalStack:
    settings: Settings
    nodes: int = 1
    with_gateway: bool = True
    # Restart Redis and SeaweedFS when they die (see Supervisor); None: never.
    restart: RestartPolicy | None = field(default_factory=RestartPolicy)
    processes: list[ManagedProcess] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    supervisor: Supervisor | None = None
    # Run once every Ray node is up, before the gateway starts (`examday up` starts the
    # shard controller there, so that it places the shards the gateway would otherwise
    # start all on the node it is connected to).
    before_gateway: Callable[[], None] | None = None
    # A cluster config for Ray's autoscaler on the head (`examday up --autoscale`, made by
    # `cluster.loopback_nodes`): the head offers its head type's resources, the worker
    # nodes come and go with demand; None: `nodes` fixed nodes.
    autoscaling: dict[str, Any] | None = None
    # Once the manifest is written it follows every start of a service, by whomever.
    _published: bool = field(default=False, init=False, repr=False)
    _manifest_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for process in self.processes:
            process.on_started = self._started

    def start(self) -> None:
        started = time.monotonic()
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            redis = self._launch(services.redis_process(self.settings))
            weed = self._launch(services.seaweed_process(self.settings))
            head = self._launch(self._head_process())
            self._wait(redis, lambda: services.redis_healthy(self.settings), 20, started)
            self._wait(weed, lambda: services.seaweed_healthy(self.settings), 60, started)
            ObjectStores(self.settings).ensure_buckets()
            self._wait(head, self._head_healthy, 60, started)
            self._start_turn(started)
            for index in range(1, self.nodes):
                worker = self._launch(
                    services.ray_node_process(self.settings, head=False, index=index)
                )
                self._wait(worker, lambda i=index: self._worker_healthy(i), 60, started)
            for index in range(1, self._autoscaled_minimum() + 1):
                # Started by the autoscaler: wait for its minimum of workers.
                head.wait_healthy(functools.partial(self._worker_healthy, index), 120)
            if self.before_gateway is not None:
                self.before_gateway()
            if self.with_gateway:
                env = {**os.environ, **settings_to_env(self.settings)}
                gateway = self._launch(services.gateway_process(self.settings, env))
                self._wait(gateway, lambda: services.gateway_healthy(self.settings), 90, started)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        self.write_manifest()
        if self.restart is not None:
            self.supervise(self.restart)

    def _start_turn(self, since: float) -> None:
        if not self.settings.turn.embedded:
            return
        if services.turnserver_binary() is None:
            # Loopback clients need no relay: the stack is complete without one, but the
            # Link headers then name a server that is not there.
            _print("no turnserver installed (make coturn): starting without TURN")
            return
        relay = self._launch(services.turn_process(self.settings))
        self._wait(relay, lambda: services.turn_healthy(self.settings), 20, since)

    def supervise(
        self, policy: RestartPolicy | None = None, log: Callable[[str], None] | None = None
    ) -> Supervisor:
        """Start the supervisor thread (once; `start()` does it unless restart is None)."""
        if self.supervisor is None:
            self.supervisor = Supervisor(self, policy or RestartPolicy(), log or _print)
            self.supervisor.start()
        return self.supervisor

    def replace(self, old: ManagedProcess, new: ManagedProcess) -> None:
        """Start `new` in place of the stopped `old` (the same service with other
        arguments): the supervisor watches it, `stop()` ends it, the manifest names it."""
        new.start()  # before it is listed, so that the supervisor never starts it too
        self.processes[self.processes.index(old)] = new
        new.on_started = self._started
        self._started()

    def stop(self) -> None:
        self._published = False
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            supervisor.halt()
        for process in reversed(self.processes):
            process.stop()
        if supervisor is not None:
            supervisor.join(timeout=5)
        self.manifest_path.unlink(missing_ok=True)

    def _launch(self, process: ManagedProcess) -> ManagedProcess:
        process.on_started = self._started
        process.start()
        self.processes.append(process)
        return process

    def _wait(self, process: ManagedProcess, check: Any, timeout: float, since: float) -> None:
        process.wait_healthy(check, timeout)
        self.timings[process.name] = round(time.monotonic() - since, 2)

    def _head_process(self) -> ManagedProcess:
        if self.autoscaling is None:
            return services.ray_node_process(self.settings, head=True)
        path = self.settings.state_dir / "autoscaling.json"
        path.write_text(json.dumps(self.autoscaling, indent=1))
        types = self.autoscaling["available_node_types"]
        offered = dict(types[self.autoscaling["head_node_type"]]["resources"])
        cpus = int(offered.pop("CPU", self.settings.ray_node_cpus))
        return services.ray_node_process(
            self.settings, head=True, resources=offered, cpus=cpus, autoscaling_config=path
        )

    def _autoscaled_minimum(self) -> int:
        if self.autoscaling is None:
            return 0
        types = self.autoscaling["available_node_types"].values()
        return sum(int(t.get("min_workers", 0)) for t in types)

    def _head_healthy(self) -> bool:
        return port_open(self.settings.ray_head_ip, self.settings.ray_gcs_port)

    def _worker_healthy(self, index: int) -> bool:
        port = services.ray_node_port(self.settings, index)
        return port_open(services.ray_node_ip(self.settings, index), port)

    @property
    def manifest_path(self) -> Path:
        return self.settings.state_dir / MANIFEST_NAME

    def _started(self) -> None:
        if self._published:
            self.write_manifest()

    def write_manifest(self) -> None:
        """The stack as it runs now: each service's pid and when that process started."""
        manifest = {
            "supervisor_pid": os.getpid(),
            "state_dir": str(self.settings.state_dir.resolve()),
            "gateway_url": self.settings.gateway_url if self.with_gateway else None,
            "redis_url": self.settings.redis_url,
            "s3_endpoint": f"http://127.0.0.1:{self.settings.s3_port}",
            "ray_address": self.settings.ray_head_address,
            "services": {p.name: p.pid for p in self.processes},
            # With its pid, its start (kernel ticks since boot) names one process for
            # good: a pid is reused, the pair never is. No wall clock is involved.
            "starts": {p.name: start_ticks(p.pid) for p in self.processes if p.pid},
            "started_at": time.time(),
        }
        # Replaced whole: `examday status` and `down` may read it while a restart rewrites
        # it; one writer at a time (the supervisor's thread restarts services too).
        with self._manifest_lock:
            partial = self.manifest_path.with_suffix(".json.tmp")
            partial.write_text(json.dumps(manifest, indent=2))
            partial.replace(self.manifest_path)
            self._published = True


def _print(line: str) -> None:
    # A note for whoever watches, on stderr: stdout may be a report (`bench ... --json`).
    print(line, file=sys.stderr, flush=True)


def read_manifest(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / MANIFEST_NAME
    if not path.exists():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def named_process(manifest: dict[str, Any], name: str) -> psutil.Process | None:
    """The running process the manifest names for a service; None when it is gone, or when
    its pid now belongs to another process. Pids are reused (a container's pid_max is often
    32768, which a day of tests wraps), and another stack's Redis or SeaweedFS on a reused
    pid looks just like ours: a pid counts only with the start the manifest recorded."""
    pid = manifest["services"].get(name)
    if not pid or start_ticks(int(pid)) != manifest.get("starts", {}).get(name):
        return None
    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return process


def start_ticks(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (field 22 of /proc/PID/stat); None
    when there is no such process. Unlike a start time on the wall clock it never moves."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[19])


def random_secrets() -> dict[str, Any]:
    """Fresh keys for a `test` stack: outside development the published dev keys are
    refused, and a test stack runs with real ones rather than being exempted."""

    def key() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    return {
        "token_signing_key": key(),
        "data_master_key": key(),
        "pseudonym_key": key(),
        "update_signing_key": key(),
        "audit_signing_key": key(),
        "turn": {"shared_secret": key()},
    }


def isolated_settings(state_dir: Path, **overrides: object) -> Settings:
    """Settings for a private stack on random loopback ports (tests, benchmarks, fleets).

    The port blocks are taken below Linux's ephemeral range (32768-60999), where
    outgoing connections of a busy machine would otherwise take them first.
    """
    s3_port = free_port_block(8, 20000, 22700, also_offset=10000)
    redis_port = free_port()
    access_key, secret_key = secrets.token_hex(10), secrets.token_urlsafe(30)
    regions = {
        name: RegionStore(
            endpoint=f"http://127.0.0.1:{s3_port}",
            bucket=f"examday-{name}",
            access_key=SecretStr(access_key),
            secret_key=SecretStr(secret_key),
        )
        for name in ("cn-north", "cn-east")
    }
    values: dict[str, object] = {
        **random_secrets(),
        "env": "test",
        "state_dir": state_dir,
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "regions": regions,
        "s3_port": s3_port,
        "ray_gcs_port": free_port(),
        # Room for MAX_LOCAL_NODES nodes' Ray ports (infra.services.RAY_PORTS_PER_NODE each).
        "ray_port_base": free_port_block(
            MAX_LOCAL_NODES * services.RAY_PORTS_PER_NODE + 20, 10000, 19900
        ),
        "ray_node_memory_bytes": 3 * 1024**3,
        "ray_object_store_bytes": 256 * 1024**2,
        "gateway_port": free_port(),
        "trace_file": state_dir / "spans.jsonl",
    }
    relay = free_port_block(32, 22700, 23900)
    values["turn"] = {
        **values["turn"],  # type: ignore[dict-item]
        "port": free_port(),
        "relay_min_port": relay,
        "relay_max_port": relay + 31,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
