"""Builders of client records and readers of what the flush left in the object stores."""

from __future__ import annotations

import gzip
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from api.runtime import Runtime
from core.keys import ANONYMOUS


def record(
    device: str,
    *,
    rid: str | None = None,
    kind: str = "log",
    message: str = "screen opened",
    session: str | None = "sess-0001",
    os: str = "android",
    app_version: str = "3.1.0",
    model: str = "Pixel 7",
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": kind,
        "time": time.time(),
        "level": "error" if kind == "crash" else "info",
        "message": message,
        "device_id": device,
        "os": os,
        "os_version": "14",
        "model": model,
        "app_version": app_version,
        **extra,
    }
    if rid is not None:
        body["id"] = rid
    if session is not None:
        body["session_id"] = session
    if kind == "crash":
        body.setdefault("stack", "java.lang.IllegalStateException\n  at app.Main.run(Main.kt:42)")
    if kind == "metric":
        body.setdefault("name", "screen.view")
        body.setdefault("value", 1.0)
    return body


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in records) + b"\n"


def new_device() -> str:
    return f"dev-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class StoredObject:
    region: str
    key: str
    raw: bytes  # as stored (gzip)
    lines: list[dict[str, Any]]


async def list_keys(runtime: Runtime, region: str, prefix: str) -> list[str]:
    stores = runtime.stores
    keys: list[str] = []
    params: dict[str, Any] = {"Bucket": stores.bucket(region), "Prefix": prefix}
    for _ in range(1000):
        page = await stores.call(region, "list_objects_v2", **params)
        keys += [item["Key"] for item in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return keys
        params["ContinuationToken"] = page["NextContinuationToken"]
    raise AssertionError("too many pages")


async def read_objects(runtime: Runtime, region: str, prefix: str) -> list[StoredObject]:
    found = []
    for key in await list_keys(runtime, region, prefix):
        response = await runtime.stores.call(
            region, "get_object", Bucket=runtime.stores.bucket(region), Key=key
        )
        raw = response["Body"].read()
        text = gzip.decompress(raw).decode()
        lines = [json.loads(line) for line in text.splitlines() if line]
        found.append(StoredObject(region, key, raw, lines))
    return found


def anonymous_prefix() -> str:
    return f"{ANONYMOUS}/logs/"


def runtime_of(app: Any) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def hour_of(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H")
