"""`examday up`, `down` and `status`: the embedded cluster's life cycle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from cluster import commands
from infra.processes import pid_alive
from infra.settings import Settings, settings_to_env
from infra.stack import LocalStack, named_process, read_manifest

CONTROLLER_START_TIMEOUT_S = 120.0


def stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set `stop`. Not from the handler itself: `Event.set` takes a lock,
    and a second signal landing while the first handler holds it deadlocks the main thread
    (seen: `examday down` left `examday up --demo` hung with its children dead)."""

    def handler(*_: object) -> None:
        threading.Thread(target=stop.set, name="examday-stop", daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def up(
    settings: Settings,
    *,
    nodes: int,
    demo: bool,
    autoscale: bool = False,
    idle_timeout_s: float = 60.0,
) -> int:
    stop = threading.Event()
    stack = LocalStack(settings, nodes=nodes)
    if autoscale:
        from cluster import loopback_nodes

        stack.autoscaling = loopback_nodes.local_config(settings, idle_timeout_s)
    if settings.ops.controller_autostart:
        # Before the gateway: the controller spreads the shards over the nodes
        # (`ShardController.place`), which the gateway then finds running.
        stack.before_gateway = lambda: _start_controller_or_warn(settings, stop)
    stop_on_signals(stop)
    what = "a Ray head and autoscaled media nodes" if autoscale else f"{nodes} Ray node(s)"
    print(f"examday: starting {what}, state in {settings.state_dir.resolve()}")
    stack.start()
    try:
        print(f"examday: up in {stack.timings['total']:.1f}s")
        print(f"  gateway   {settings.gateway_url}  (/healthz, /readyz, /docs)")
        print(f"  redis     {settings.redis_url}")
        print(
            f"  s3        http://127.0.0.1:{settings.s3_port}  buckets: "
            + ", ".join(f"{r}={s.bucket}" for r, s in settings.regions.items())
        )
        print(f"  ray       {settings.ray_head_address}")
        print(f"  state     {settings.state_dir.resolve()}  (logs in logs/)")
        if demo:
            commands.run_demo(settings, stop)
        print("examday: running; Ctrl-C (or `examday down`) stops everything")
        while not stop.wait(1.0):
            pass
    finally:
        print("examday: stopping")
        stack.stop()
        print("examday: stopped")
    return 0


def _start_controller_or_warn(settings: Settings, stop: threading.Event) -> None:
    start_controller(settings, stop)


def start_controller(settings: Settings, stop: threading.Event) -> bool:
    """Start the room shard controller by `examday cluster autoscale` in a child: a
    short-lived Ray driver, so that the supervisor itself never joins the cluster it
    stops. A controller that does not start leaves the platform up, with a warning."""
    env = {**os.environ, **settings_to_env(settings)}
    argv = [sys.executable, "-m", "cluster.cli", "cluster", "autoscale"]
    child = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + CONTROLLER_START_TIMEOUT_S
    # Polled, so that Ctrl-C or `examday down` meanwhile is not kept waiting.
    while child.poll() is None and not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.2)
    if child.poll() is None:
        child.kill()
        child.wait()
        if not stop.is_set():
            print("examday: WARNING the shard controller did not start in time")
        return False
    out, err = child.communicate()
    if child.returncode != 0:
        tail = (err or out).strip().splitlines()[-5:]
        print("examday: WARNING the shard controller did not start:", *tail, sep="\n  ")
        return False
    print("  " + (out.strip().splitlines() or ["controller started"])[0])
    return True


def down(settings: Settings, timeout: float = 60.0) -> int:
    manifest = read_manifest(settings.state_dir)
    if manifest is None:
        print(f"examday: nothing running for {settings.state_dir.resolve()}")
        return 0
    supervisor = int(manifest["supervisor_pid"])
    if pid_alive(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
    # Whatever outlived the supervisor (it was SIGKILLed, say) is ended by pid.
    for name in manifest["services"]:
        process = named_process(manifest, name)
        if process is not None and _is_ours(process):
            print(f"examday: {name} (pid {process.pid}) outlived the supervisor; killing it")
            os.killpg(process.pid, signal.SIGKILL)
    (settings.state_dir / "stack.json").unlink(missing_ok=True)
    print("examday: down")
    return 0


def _is_ours(process: psutil.Process) -> bool:
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return any(word in cmdline for word in ("redis-server", "weed", "ray", "uvicorn"))


def status(settings: Settings) -> int:
    manifest = read_manifest(settings.state_dir)
    if manifest is None:
        print(f"examday: not running (no stack in {settings.state_dir.resolve()})")
        return 1
    print(f"examday: supervisor pid {manifest['supervisor_pid']}, state {manifest['state_dir']}")
    for name, pid in manifest["services"].items():
        process = named_process(manifest, name)
        rss = _rss_mib(process) if process is not None else 0.0
        state = "up" if process is not None else "DOWN"
        print(f"  {name:<12} pid {pid:<8} {state:<5} rss {rss:7.1f} MiB")
    ready = _readyz(manifest.get("gateway_url"))
    print(json.dumps(ready, indent=2))
    kept = ready.get("checks", {}).get("redis_persistence", {})
    if kept.get("verdict") in ("degraded", "unknown"):
        print(f"examday: {kept['verdict'].upper()} redis persistence: {kept.get('detail')}")
    # Degraded still serves: the exit status says whether it does.
    return 0 if ready.get("status") in ("ready", "degraded") else 1


def _rss_mib(root: psutil.Process) -> float:
    """RSS of a service with all its descendants (Ray's raylet and workers)."""
    try:
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return 0.0


def _readyz(url: str | None) -> dict[str, Any]:
    if not url:
        return {"status": "no gateway"}
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        return body
    except OSError as exc:
        return {"status": "unreachable", "detail": str(exc)}


def state_dir_default() -> Path:
    return Path(os.environ.get("EXAMDAY_STATE_DIR", ".state"))
