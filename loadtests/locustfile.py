"""The HTTP plane of the candidate journey as a Locust test (`FastHttpUser`).

Everything is Locust's own: its options (`--host`, `--users`, `--spawn-rate`,
`--run-time`, `--tags`/`--exclude-tags`, `--headless`, `--csv`), its web UI, and its
distributed mode (`--master`/`--worker`, or `--processes N` on one machine). The exam
is named by three options this file adds, which the master hands to its workers:

    examday loadtest --setup-only --candidates 2000 --target http://127.0.0.1:8000
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \\
        --exam <exam id> --first-candidate 100000 --candidates 2000 \\
        --users 2000 --spawn-rate 40 --run-time 5m --headless

Distributed, give the master `--expect-workers W`: worker i of W takes candidate
numbers first+i, first+i+W, ... so that no two users of the fleet log in as the same
candidate (a second login would replace the first one's session).

Each simulated user takes the next candidate number, logs in, accepts the policy,
checks its version and network, joins, then heartbeats (task tag `heartbeat`) and
sends a log batch now and then (tag `logs`), and logs out when stopped. Media is not
part of it (Locust speaks HTTP only): use `examday loadtest --media M` for candidates
with cameras.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from locust import between, events, tag, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.runners import WorkerRunner

_lock = threading.Lock()
_numbers: Iterator[int] | None = None


def _options(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("examday", "the rehearsal exam the candidates sit")
    group.add_argument(
        "--exam", default="", help="exam id (`examday loadtest --setup-only` prints it)"
    )
    group.add_argument(
        "--first-candidate", type=int, default=100000, help="the first candidate number"
    )
    group.add_argument(
        "--candidates", type=int, default=1000, help="candidate numbers on the roster"
    )


def _check(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and not options.exam:
        raise SystemExit("locustfile: --exam is required (see `examday loadtest --setup-only`)")


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_check)  # type: ignore[no-untyped-call]


def _next_number(environment: Environment) -> str:
    """This process's next candidate number: worker i of W deals i, i+W, i+2W, ...,
    cycling over the roster (a standalone run is worker 0 of 1)."""
    global _numbers
    with _lock:
        if _numbers is None:
            options = environment.parsed_options
            assert options is not None
            if isinstance(environment.runner, WorkerRunner):
                # The master's --expect-workers, handed over with the first spawn message.
                index = max(0, environment.runner.worker_index)
                workers = max(1, int(options.expect_workers or 1))
            else:
                index, workers = 0, 1
            first, count = int(options.first_candidate), int(options.candidates)
            _numbers = itertools.cycle(range(first + index % workers, first + count, workers))
        return str(next(_numbers))


class Candidate(FastHttpUser):
    wait_time = between(4, 6)  # a heartbeat every ~5 s

    def on_start(self) -> None:
        options = self.environment.parsed_options
        assert options is not None
        self.number = _next_number(self.environment)
        self.headers: dict[str, str] = {}
        with self.client.post(
            "/v1/sessions",
            json={"exam_no": options.exam, "candidate_no": self.number},
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"login {response.status_code}")
                return
            self.headers = {"Authorization": f"Bearer {response.json()['token']}"}
        self.client.post("/v1/me/consent", json={"policy_version": "1"}, headers=self.headers)
        body = {"platform": "windows", "version": "1.0.0", "device_id": f"device-{self.number}"}
        self.client.post("/v1/updates/check", json=body, headers=self.headers)
        self.client.get("/v1/me/network-advice?network=wifi", headers=self.headers)
        self.client.post("/v1/me/join", json={"network": "wifi"}, headers=self.headers)

    @tag("heartbeat")
    @task(10)
    def heartbeat(self) -> None:
        self.client.post("/v1/me/heartbeat", json={}, headers=self.headers)

    @tag("logs")
    @task(1)
    def client_logs(self) -> None:
        record: dict[str, Any] = {
            "id": uuid.uuid4().hex, "kind": "log", "time": datetime.now(UTC).isoformat(),
            "level": "info", "message": "still here", "device_id": f"device-{self.number}",
            "os": "windows", "os_version": "11", "model": "laptop", "app_version": "1.0.0",
        }  # fmt: skip
        self.client.post(
            "/v1/logs",
            data=json.dumps(record),
            headers={**self.headers, "Content-Type": "application/x-ndjson"},
        )

    def on_stop(self) -> None:
        if self.headers:
            self.client.delete("/v1/sessions/current", headers=self.headers)
