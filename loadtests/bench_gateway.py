"""`examday bench gateway`: how much the gateway costs next to a bare FastAPI app.

In one run, against a private stack on loopback (Redis, SeaweedFS, one Ray node
and the gateway as its own uvicorn process) and a bare FastAPI "hello" app
served the same way, the same closed-loop load generator measures:

- bare hello req/s;
- bare login-shaped req/s: a route with the login's body, answer and cookie and
  nothing else, on the same bare app (`floor_ratio` = it / bare hello: the best
  `ratio` a FastAPI login could have here), and the same route with one Redis
  script call added (`floor_redis_ratio`: the best a login that keeps its
  sessions and attempt budgets in Redis could have here, before its own work);
- candidate login req/s (each request a different candidate);
- heartbeat req/s of joined candidates, through the gateway to the room shards;
- the same heartbeats as messages on presence sockets (`socket_ratio` = their
  rate / the HTTP heartbeats' rate);
- and, with `--storm N`, N candidates arriving within `--storm-seconds` who
  each log in, accept the policy and join their room.

`ratio` = login req/s / bare req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from actors.accounts.staff import StaffRegistry
from api.routes.presence import PATH as PRESENCE_PATH
from infra import progress
from infra import redis as redis_conn
from infra.processes import ManagedProcess, free_port, port_open
from infra.settings import Settings
from infra.stack import LocalStack, isolated_settings
from loadtests.httpload import Latencies, Request, problem_reason, run_closed_loop


def _hello_process(state: Path, port: int, settings: Settings) -> ManagedProcess:
    argv = [
        sys.executable, "-m", "uvicorn", "loadtests.hello:app",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "EXAMDAY_REDIS_URL": settings.redis_url}
    return ManagedProcess("hello", argv, state / "logs" / "hello.log", env=env)


async def bench_organiser(settings: Settings, http: aiohttp.ClientSession) -> dict[str, str]:
    """A fresh organiser account and its bearer header, for a benchmark's own stack."""
    redis = redis_conn.connect(settings)
    username, password = f"bench-{secrets.token_hex(3)}", secrets.token_urlsafe(16)
    try:
        await StaffRegistry(redis).create(username, password, "organiser", None)
    finally:
        await redis.aclose()
    async with http.post(
        "/v1/staff/sessions", json={"username": username, "password": password}
    ) as response:
        token = (await response.json())["token"]
    return {"Authorization": f"Bearer {token}"}


async def _exam(http: aiohttp.ClientSession, organiser: dict[str, str], candidates: int) -> str:
    exam_id = f"bench{secrets.token_hex(3)}"
    now = datetime.now(UTC)
    body = {
        "id": exam_id,
        "title": "Benchmark",
        "starts_at": (now - timedelta(minutes=1)).isoformat(),
        "ends_at": (now + timedelta(hours=3)).isoformat(),
        "region": "cn-north",
        "room_capacity": 50,
    }
    async with http.post("/v1/exams", json=body, headers=organiser) as response:
        assert response.status == 201, await response.text()
    rows = ["exam_no,candidate_no,name,date_of_birth,room,guardian_consent"]
    rows += [f"{exam_id},{n},Candidate {n},2000-01-01,r{n // 50}," for n in range(candidates)]
    async with http.post(
        f"/v1/exams/{exam_id}/roster",
        data="\n".join(rows).encode(),
        headers={**organiser, "Content-Type": "text/csv"},
    ) as response:
        assert response.status == 200, await response.text()
    return exam_id


async def _login(http: aiohttp.ClientSession, exam_id: str, number: int) -> tuple[int, str, str]:
    body = {"exam_no": exam_id, "candidate_no": str(number)}
    async with http.post("/v1/sessions", json=body) as response:
        if response.status != 201:
            return response.status, await problem_reason(response), ""
        return response.status, "", str((await response.json())["token"])


async def _join(http: aiohttp.ClientSession, token: str) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(
        "/v1/me/consent", json={"policy_version": "1"}, headers=headers
    ) as response:
        if response.status != 204:
            return response.status, await problem_reason(response)
    async with http.post("/v1/me/join", json={"network": "wifi"}, headers=headers) as response:
        return response.status, await problem_reason(response)


async def _phases(
    settings: Settings,
    hello: str,
    seconds: float,
    concurrency: int,
    storm: int,
    storm_seconds: float,
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=max(concurrency, 256))
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(hello, connector=connector, timeout=timeout) as bare_http,
        aiohttp.ClientSession(settings.gateway_url, timeout=timeout) as http,
    ):
        organiser = await bench_organiser(settings, http)
        pool = 20_000
        exam_id = await _exam(http, organiser, pool)

        async def hello_request(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
            async with session.get("/hello") as response:
                await response.read()
                return response.status, ""

        tokens: list[str] = []

        async def login_request(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
            status, reason, token = await _login(session, exam_id, n)
            if token:
                tokens.append(token)
            return status, reason

        def shaped_route(path: str) -> Request:
            async def request(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
                body = {"exam_no": exam_id, "candidate_no": str(n)}
                async with session.post(path, json=body) as response:
                    await response.read()
                    return response.status, ""

            return request

        _progress("bare hello")
        bare = await run_closed_loop(
            bare_http, hello_request, concurrency=concurrency, seconds=seconds
        )
        _progress("bare login-shaped route")
        shaped = await run_closed_loop(
            bare_http, shaped_route("/sessions"), concurrency=concurrency, seconds=seconds
        )
        _progress("bare login-shaped route with one Redis call")
        shaped_redis = await run_closed_loop(
            bare_http, shaped_route("/sessions-redis"), concurrency=concurrency, seconds=seconds
        )
        _progress("login")
        login = await run_closed_loop(
            http, login_request, concurrency=concurrency, seconds=seconds, max_requests=pool
        )
        _progress("join + heartbeat")
        joiners = tokens[:500]

        async def join_request(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
            return await _join(session, joiners[n])

        # Each candidate joins once: the phase ends when all have, or after `seconds`.
        join = await run_closed_loop(
            http, join_request, concurrency=concurrency, seconds=seconds, max_requests=len(joiners)
        )

        async def heartbeat_request(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
            headers = {"Authorization": f"Bearer {joiners[n % len(joiners)]}"}
            async with session.post("/v1/me/heartbeat", json={}, headers=headers) as response:
                return response.status, await problem_reason(response)

        heartbeat = await run_closed_loop(
            http, heartbeat_request, concurrency=concurrency, seconds=seconds
        )
        _progress("heartbeat over presence sockets")
        heartbeat_socket = await _socket_beats(http, joiners[:concurrency], seconds)
        report: dict[str, Any] = {
            "bare_hello": bare.summary(),
            "login": login.summary(),
            "join": join.summary(),
            "heartbeat": heartbeat.summary(),
            "heartbeat_socket": heartbeat_socket.summary(),
            "concurrency": concurrency,
            "seconds_per_phase": seconds,
        }
        hello_rate = report["bare_hello"]["req_per_s"]
        report["ratio"] = round(report["login"]["req_per_s"] / hello_rate, 3)
        # FastAPI's own floor: the login's shape alone, served by the bare app.
        report["bare_login_shaped"] = shaped.summary()
        report["floor_ratio"] = round(report["bare_login_shaped"]["req_per_s"] / hello_rate, 3)
        report["bare_login_shaped_redis"] = shaped_redis.summary()
        report["floor_redis_ratio"] = round(
            report["bare_login_shaped_redis"]["req_per_s"] / hello_rate, 3
        )
        report["socket_ratio"] = round(
            report["heartbeat_socket"]["req_per_s"] / max(report["heartbeat"]["req_per_s"], 1e-9), 2
        )
        if storm:
            _progress(f"storm of {storm}")
            report["storm"] = await _storm(http, organiser, storm, storm_seconds)
        return report


async def _socket_beats(
    http: aiohttp.ClientSession, tokens: list[str], seconds: float
) -> Latencies:
    """Heartbeats on one presence socket per candidate, each beat sent as soon as the
    socket's last one was answered (the stack allows that: no pacing here)."""
    sockets = [
        await http.ws_connect(PRESENCE_PATH, headers={"Authorization": f"Bearer {token}"})
        for token in tokens
    ]
    idle: asyncio.Queue[aiohttp.ClientWebSocketResponse] = asyncio.Queue()
    for ws in sockets:
        idle.put_nowait(ws)

    async def beat(session: aiohttp.ClientSession, n: int) -> tuple[int, str]:
        ws = await idle.get()
        try:
            await ws.send_str("{}")
            answer = json.loads(await ws.receive_str())
        finally:
            idle.put_nowait(ws)
        error = answer.get("error")
        return (int(error["status"]), str(error["reason"])) if error else (200, "")

    try:
        return await run_closed_loop(http, beat, concurrency=len(sockets), seconds=seconds)
    finally:
        for ws in sockets:
            await ws.close()


def _progress(phase: str) -> None:
    # On the progress line of `examday bench` (a terminal, not quiet); standalone, a line.
    if progress.active():
        progress.note(phase)
    elif not progress.quiet_env():
        print(f"bench gateway: {phase}", file=sys.stderr, flush=True)


async def _timed(latencies: Latencies, call: Any) -> None:
    began = time.perf_counter()
    try:
        status, reason = await call
    except (aiohttp.ClientError, TimeoutError) as exc:
        latencies.errors[type(exc).__name__] += 1
        return
    if 200 <= status < 300:
        latencies.add(time.perf_counter() - began)
    else:
        latencies.errors[f"{status} {reason}"] += 1


async def _storm(
    http: aiohttp.ClientSession, organiser: dict[str, str], candidates: int, window: float
) -> dict[str, Any]:
    """Every candidate arrives at a uniformly spread moment of the window and joins."""
    exam_id = await _exam(http, organiser, candidates)
    login, journey = Latencies(), Latencies()
    started = time.perf_counter()

    async def candidate(n: int) -> None:
        await asyncio.sleep(max(0.0, started + window * n / candidates - time.perf_counter()))
        began = time.perf_counter()
        try:
            status, reason, token = await _login(http, exam_id, n)
        except (aiohttp.ClientError, TimeoutError) as exc:
            login.errors[type(exc).__name__] += 1
            return
        if status != 201:
            login.errors[f"{status} {reason}"] += 1
            return
        login.add(time.perf_counter() - began)
        await _timed(journey, _join(http, token))
        if journey.samples:
            journey.samples[-1] = time.perf_counter() - began

    await asyncio.gather(*(candidate(n) for n in range(candidates)))
    login.ended = journey.ended = time.perf_counter()
    return {
        "candidates": candidates,
        "window_s": window,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "login": login.summary(),
        "login_consent_join": journey.summary(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="examday bench gateway", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--storm", type=int, default=0, help="candidates in the login storm")
    parser.add_argument("--storm-seconds", type=float, default=60.0, help="the storm's window")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.concurrency < 1 or args.storm < 0 or args.storm_seconds <= 0:
        parser.error("durations must be positive, concurrency >= 1, storm >= 0")

    with tempfile.TemporaryDirectory(prefix="examday-bench-") as state:
        # Beats on a presence socket are not paced here: each is sent when the last
        # was answered, so that the phase measures what a beat costs.
        settings = isolated_settings(
            Path(state),
            env="development",
            cookie_secure=False,
            trace_file=None,
            presence_min_interval_seconds=0.0,
            heartbeats_per_minute=10**9,  # the bench measures the route, not its limit
        )
        stack = LocalStack(settings, nodes=1)
        hello_port = free_port()
        hello = _hello_process(Path(state), hello_port, settings)
        stack.start()
        try:
            hello.start()
            hello.wait_healthy(lambda: port_open("127.0.0.1", hello_port), 30)
            report = asyncio.run(
                _phases(
                    settings,
                    f"http://127.0.0.1:{hello_port}",
                    args.seconds,
                    args.concurrency,
                    args.storm,
                    args.storm_seconds,
                )
            )
        finally:
            hello.stop()
            stack.stop()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        names = ("bare_hello", "bare_login_shaped", "bare_login_shaped_redis", "login")
        for name in (*names, "join", "heartbeat", "heartbeat_socket"):
            s = report[name]
            print(
                f"{name:<11} {s['req_per_s']:>8} req/s  p50 {s['p50_ms']} ms"
                f"  p99 {s['p99_ms']} ms  errors {s['errors']}"
            )
        print(
            f"ratio (login / bare) = {report['ratio']}, floor {report['floor_ratio']}, "
            f"floor with one Redis call {report['floor_redis_ratio']}"
        )
        print(f"heartbeats: socket / HTTP = {report['socket_ratio']}")
        if "storm" in report:
            print(json.dumps(report["storm"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
