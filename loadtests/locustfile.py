"""The HTTP plane of the candidate journey for Locust (`FastHttpUser`).

For teams that already run Locust. Make a rehearsal exam first (it prints the
exam id and the candidate numbers), then point Locust at the gateway:

    examday loadtest --setup-only --candidates 2000 --target http://127.0.0.1:8000
    EXAMDAY_LOCUST_EXAM=<exam id> EXAMDAY_LOCUST_FIRST=100000 EXAMDAY_LOCUST_COUNT=2000 \\
        locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \\
        --users 2000 --spawn-rate 40 --run-time 5m --headless

Each simulated user takes the next candidate number, logs in, accepts the
policy, checks its version and network, joins, then heartbeats and sends a log
batch now and then. Media is not part of it (Locust speaks HTTP only): use
`examday loadtest --media M` for candidates with cameras.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

EXAM = os.environ.get("EXAMDAY_LOCUST_EXAM", "")
FIRST = int(os.environ.get("EXAMDAY_LOCUST_FIRST", "100000"))
COUNT = int(os.environ.get("EXAMDAY_LOCUST_COUNT", "1000"))
_numbers = itertools.cycle(range(FIRST, FIRST + COUNT))
_lock = threading.Lock()


class Candidate(FastHttpUser):
    wait_time = between(4, 6)  # a heartbeat every ~5 s

    def on_start(self) -> None:
        with _lock:
            self.number = str(next(_numbers))
        response = self.client.post(
            "/v1/sessions", json={"exam_no": EXAM, "candidate_no": self.number}
        )
        self.headers = {"Authorization": f"Bearer {response.json()['token']}"}
        self.client.post("/v1/me/consent", json={"policy_version": "1"}, headers=self.headers)
        body = {"platform": "windows", "version": "1.0.0", "device_id": f"device-{self.number}"}
        self.client.post("/v1/updates/check", json=body, headers=self.headers)
        self.client.get("/v1/me/network-advice?network=wifi", headers=self.headers)
        self.client.post("/v1/me/join", json={"network": "wifi"}, headers=self.headers)

    @task(10)
    def heartbeat(self) -> None:
        self.client.post("/v1/me/heartbeat", json={}, headers=self.headers)

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
        self.client.delete("/v1/sessions/current", headers=self.headers)
