from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from redis.asyncio import Redis

from core import hashing, keys
from core.directory import ShardDirectory
from infra import redis as redis_conn
from infra.errors import Unavailable
from infra.settings import Settings
from infra.stack import LocalStack

KEYS = [f"room-{i}" for i in range(10_000)]
SHARDS = [f"room-shard-{i}" for i in range(8)]


def test_owner_is_stable_and_independent_of_order() -> None:
    first = [hashing.owner(k, SHARDS) for k in KEYS[:500]]
    again = [hashing.owner(k, list(reversed(SHARDS))) for k in KEYS[:500]]
    assert first == again


def test_balanced_within_ten_percent_over_eight_shards() -> None:
    counts = Counter(hashing.owner(k, SHARDS) for k in KEYS)
    expected = len(KEYS) / len(SHARDS)
    worst = max(abs(c - expected) / expected for c in counts.values())
    print(f"per-shard counts {sorted(counts.values())}, worst deviation {worst:.1%}")
    assert set(counts) == set(SHARDS)
    assert worst < 0.10


def test_adding_a_shard_moves_about_one_ninth() -> None:
    before = {k: hashing.owner(k, SHARDS) for k in KEYS}
    grown = [*SHARDS, "room-shard-8"]
    after = {k: hashing.owner(k, grown) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    print(f"moved {len(moved)} of {len(KEYS)} ({len(moved) / len(KEYS):.1%}), ideal 1/9 = 11.1%")
    assert all(after[k] == "room-shard-8" for k in moved)
    assert 0.08 < len(moved) / len(KEYS) < 0.14


def test_removing_a_shard_moves_only_its_keys() -> None:
    before = {k: hashing.owner(k, SHARDS) for k in KEYS}
    shrunk = [s for s in SHARDS if s != "room-shard-3"]
    after = {k: hashing.owner(k, shrunk) for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "room-shard-3"}
    assert 0.09 < len(moved) / len(KEYS) < 0.16


def test_ranked_puts_the_owner_first() -> None:
    for key in KEYS[:100]:
        assert hashing.ranked(key, SHARDS)[0] == hashing.owner(key, SHARDS)


def test_no_shards_is_unavailable() -> None:
    with pytest.raises(Unavailable) as caught:
        hashing.owner("room-1", [])
    assert caught.value.reason == "no_shards"


async def test_directory_in_redis_is_shared_by_every_reader(stack: LocalStack) -> None:
    settings: Settings = stack.settings
    writer_redis: Redis = redis_conn.connect(settings)
    reader_redis: Redis = redis_conn.connect(settings)
    try:
        writer = ShardDirectory(writer_redis, "test-kind")
        reader = ShardDirectory(reader_redis, "test-kind")
        for shard in SHARDS:
            await writer.add(shard, {"node": "127.0.0.2"})
        assert await reader.members() == sorted(SHARDS)
        assert await reader.owner("room-42") == hashing.owner("room-42", SHARDS)
        await writer.pin("room-42", "elsewhere")
        reader.forget_cache()  # readers may act on a directory up to half a second old
        assert await reader.owner("room-42") == "elsewhere"
        await writer.unpin("room-42")
        await writer.remove("room-shard-0")
        fresh = ShardDirectory(reader_redis, "test-kind")
        assert "room-shard-0" not in await fresh.members()
        assert (await fresh.meta())["room-shard-1"] == {"node": "127.0.0.2"}
    finally:
        await writer_redis.delete(
            keys.shards_key("test-kind"), keys.shards_version_key("test-kind")
        )
        await writer_redis.aclose()
        await reader_redis.aclose()


async def test_a_stale_directory_is_read_once_for_every_waiting_reader(stack: LocalStack) -> None:
    """Hundreds of beats in flight when the cache goes stale make one read of the
    directory, not one each (each taking a connection of the gateway's Redis pool); a
    change made meanwhile is still read by its maker."""
    redis: Redis = redis_conn.connect(stack.settings)
    try:
        directory = ShardDirectory(redis, "test-stampede")
        for shard in SHARDS:
            await directory.add(shard)
        await directory.members()
        await asyncio.sleep(0.6)  # past the cache's half second
        before = (await redis.info("commandstats"))["cmdstat_get"]["calls"]
        owners = await asyncio.gather(*(directory.owner(key) for key in KEYS[:300]))
        gets = (await redis.info("commandstats"))["cmdstat_get"]["calls"] - before
        assert owners == [hashing.owner(key, SHARDS) for key in KEYS[:300]]
        assert gets < 10, f"{gets} reads of the directory's version for one stale cache"

        await asyncio.sleep(0.6)
        reading = asyncio.ensure_future(directory.owner("room-7"))
        await asyncio.sleep(0)  # its refresh has begun
        await directory.pin("room-7", "elsewhere")
        assert await directory.owner("room-7") == "elsewhere"
        assert await reading in (hashing.owner("room-7", SHARDS), "elsewhere")
        assert await directory.owner("room-7") == "elsewhere"  # an older read is not cached
    finally:
        await redis.delete(
            keys.shards_key("test-stampede"),
            keys.shards_version_key("test-stampede"),
            keys.shards_pins_key("test-stampede"),
        )
        await redis.aclose()
