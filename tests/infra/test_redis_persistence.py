"""The persistence verdict on a Redis: a bare one (no AOF, no snapshots) is `degraded` with a
reason, one with snapshots only too, one with an AOF is `ok`, one that refuses CONFIG is
`unknown`; `/readyz` says `degraded` (still 200) while the session's Redis runs without
its AOF."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis
from redis.asyncio import Redis

from infra import services
from infra.processes import ManagedProcess, free_port
from infra.redis_persistence import persistence
from infra.settings import Settings


@contextlib.contextmanager
def _redis_by_hand(tmp_path: Path, *extra: str) -> Iterator[str]:
    """A redis-server as an operator might run it by hand: nothing kept on disk."""
    port = free_port()
    argv = [
        str(services.redis_server_binary()),
        "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path),
        "--appendonly", "no", "--save", "", *extra,
    ]  # fmt: skip
    process = ManagedProcess("bare-redis", argv, tmp_path / "redis.log")
    process.start()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        process.wait_healthy(lambda: _pings(url), 20)
        yield url
    finally:
        process.stop()


def _pings(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _config_set(url: str, name: str, value: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.config_set(name, value)
        # Turning the AOF on starts its first rewrite, and Redis 6 ignores SIGTERM until
        # that is written ("Writing initial AOF, can't exit"): let it finish first.
        while client.info("persistence")["aof_rewrite_in_progress"]:
            time.sleep(0.05)
    finally:
        client.close()


async def _verdict(url: str) -> tuple[str, str]:
    client = Redis.from_url(url)
    try:
        kept = await persistence(client)
    finally:
        await client.aclose()
    return kept.verdict, kept.reason


async def test_a_redis_that_refuses_config_is_unknown(tmp_path: Path) -> None:
    # CONFIG renamed away, as on managed Redis.
    with _redis_by_hand(tmp_path, "--rename-command", "CONFIG", "CONFIG-x") as url:
        assert await _verdict(url) == ("unknown", "redis_config_refused")


async def test_a_bare_redis_is_degraded_then_ok_with_an_aof(tmp_path: Path) -> None:
    with _redis_by_hand(tmp_path) as url:
        assert await _verdict(url) == ("degraded", "redis_not_persistent")
        _config_set(url, "save", "3600 1")
        assert await _verdict(url) == ("degraded", "redis_snapshots_only")
        _config_set(url, "appendonly", "yes")
        assert await _verdict(url) == ("ok", "redis_aof")
    # A Redis that is gone: unknown, and quickly (the probe has its own deadline).
    assert await _verdict(url) == ("unknown", "redis_unreachable")


async def test_readyz_says_degraded_while_redis_keeps_nothing(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert ready.json()["checks"]["redis_persistence"]["verdict"] == "ok"
    _config_set(settings.redis_url, "appendonly", "no")
    try:
        degraded = await client.get("/readyz")
    finally:
        _config_set(settings.redis_url, "appendonly", "yes")
    assert degraded.status_code == 200, degraded.text
    body = degraded.json()
    assert body["status"] == "degraded"
    assert body["reasons"] == ["redis_not_persistent"]
    assert body["checks"]["redis_persistence"]["reason"] == "redis_not_persistent"
    assert "appendonly yes" in body["checks"]["redis_persistence"]["detail"]
