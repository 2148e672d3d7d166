"""Local services start, answer, stop, and leave no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from infra import services
from infra.processes import ManagedProcess, free_port, pid_alive, port_open
from infra.settings import Settings, settings_to_env
from infra.stack import LocalStack
from infra.stack import isolated_settings as make_settings

ROOT = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_redis_starts_answers_and_stops(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    redis = services.redis_process(settings)
    redis.start()
    try:
        redis.wait_healthy(lambda: services.redis_healthy(settings), 20)
        pid = redis.pid
        assert pid is not None
        assert pid_alive(pid)
    finally:
        redis.stop()
    assert not pid_alive(pid)
    assert (tmp_path / "redis").is_dir()


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL the parent: PR_SET_PDEATHSIG still takes Redis and SeaweedFS down."""
    settings = make_settings(tmp_path)
    script = (
        "import sys, time\n"
        "from infra import services\n"
        "from infra.settings import Settings\n"
        "s = Settings()\n"
        "r = services.redis_process(s); r.start()\n"
        "w = services.seaweed_process(s); w.start()\n"
        "r.wait_healthy(lambda: services.redis_healthy(s), 20)\n"
        "w.wait_healthy(lambda: services.seaweed_healthy(s), 60)\n"
        "print(r.pid, w.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, **settings_to_env(settings), "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    redis_pid, weed_pid = (int(x) for x in parent.stdout.readline().split())
    assert pid_alive(redis_pid)
    assert pid_alive(weed_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while (pid_alive(redis_pid) or pid_alive(weed_pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(redis_pid)
    assert not pid_alive(weed_pid)


def _readyz(settings: Settings) -> int:
    try:
        with urllib.request.urlopen(f"{settings.gateway_url}/readyz", timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def test_examday_up_then_down_leaves_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    env = {**os.environ, **settings_to_env(settings)}
    examday = str(Path(sys.executable).parent / "examday")
    up = subprocess.Popen(
        [examday, "up", "--nodes", "2"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        manifest_path = tmp_path / "stack.json"
        while _readyz(settings) != 200 or not manifest_path.exists():
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, "not ready within 120 s"
            time.sleep(0.5)
        manifest = json.loads(manifest_path.read_text())
        pids = [int(p) for p in manifest["services"].values()]
        family = pids + [d for p in pids for d in _descendants(p)]
        assert set(manifest["services"]) == {
            "redis", "seaweedfs", "ray-head", "turn", "ray-worker-1", "gateway",
        }  # fmt: skip
        status = subprocess.run(
            [examday, "status"], env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert '"status": "ready"' in status.stdout
    finally:
        down = subprocess.run(
            [examday, "down"], env=env, capture_output=True, text=True, timeout=120
        )
        up.wait(60)
    assert down.returncode == 0, down.stderr
    time.sleep(1)
    alive = [pid for pid in family if pid_alive(pid)]
    assert alive == [], [psutil.Process(p).cmdline() for p in alive if pid_alive(p)]
    assert not (tmp_path / "stack.json").exists()


def test_a_busy_gateway_takes_in_every_waiting_connection_at_once(tmp_path: Path) -> None:
    """The gateway's uvicorn flags (its event loop among them) with two workers, on an app
    whose loop is always busy: 60 connections made together are served within a few loop
    iterations of the worker that took each. On plain uvloop they were taken in one per
    iteration (libuv accepts one connection per wakeup), 30 iterations apart: on exam
    day, a departure wave's fresh connections waited 15-50 s in a busy gateway's listen
    queue."""
    settings = make_settings(tmp_path, gateway_port=free_port(), gateway_workers=2)
    gateway = services.gateway_process(settings, {**os.environ, "PYTHONPATH": str(ROOT)})
    argv = [
        "tests.support.busy_app:create_app" if part == "api.app:create_app" else part
        for part in gateway.argv
    ]
    assert argv != gateway.argv
    app = ManagedProcess("busy", argv, tmp_path / "busy.log", env=gateway.env, cwd=ROOT)
    app.start()
    try:
        app.wait_healthy(lambda: port_open("127.0.0.1", settings.gateway_port), 30)
        connections = [
            socket.create_connection(("127.0.0.1", settings.gateway_port), timeout=30)
            for _ in range(60)
        ]
        ticks: dict[int, list[int]] = {}
        for connection in connections:
            connection.sendall(b"GET /tick HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        for connection in connections:
            with connection:
                answer = b""
                while chunk := connection.recv(4096):
                    answer += chunk
            served = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            ticks.setdefault(served["worker"], []).append(served["tick"])
    finally:
        app.stop()
    spreads = {worker: max(served) - min(served) for worker, served in ticks.items()}
    assert max(spreads.values()) <= 15, {worker: sorted(t) for worker, t in ticks.items()}


def test_examday_gateway_is_the_gateway_examday_up_starts(stack: LocalStack) -> None:
    """`examday gateway` (the image's CMD, the Deployment's driver) becomes the uvicorn of
    `gateway_argv` in its own process, with the same flags as `examday up`'s gateway: the
    Deployment once ran uvicorn with flags of its own, without the gateway's event loop."""
    port = free_port()
    env = {**os.environ, **settings_to_env(stack.settings), "EXAMDAY_GATEWAY_PORT": str(port)}
    expected = services.gateway_argv(stack.settings.model_copy(update={"gateway_port": port}))
    command = [str(Path(sys.executable).parent / "examday"), "gateway", "--host", "127.0.0.1"]
    log = stack.settings.state_dir / "logs" / "examday-gateway-cli.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ready = False
        while not ready and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    ready = answer.status == 200
            except OSError:
                time.sleep(0.5)
        assert ready, log.read_text()
        # The same process, now uvicorn with the flags `examday up` uses.
        assert psutil.Process(process.pid).cmdline()[1:] == expected[1:]
    finally:
        process.send_signal(signal.SIGTERM)  # what Kubernetes sends a pod
        process.wait(timeout=30)
    # Shut down gracefully, then ended by the signal it was sent (uvicorn re-raises it).
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Finished server process" in log.read_text()
