"""Personal data at rest: sealed objects, sealed identity fields, and master-key rotation."""

from __future__ import annotations

import base64
import os
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from core import keys
from core.keys import STATE_NAMES as NAMES
from infra.crypto import DataKeys
from infra.errors import ConfigError
from infra.keyring import RotatingDataKeys, rotate_all
from infra.redis import text
from infra.regional import RegionalStore
from infra.settings import Settings
from tests.privacy.conftest import raw_object, runtime_of
from tests.support.factories import new_exam

TEMPLATE = bytes(range(256)) * 2


async def _redis_values(runtime: Any, exam_id: str) -> list[bytes]:
    """Every value Redis holds under the exam's keys, whatever the type."""
    values: list[bytes] = []
    async for key in runtime.redis.scan_iter(match=keys.exam_key(exam_id) + "*", count=500):
        kind = text(await runtime.redis.type(key))
        if kind == "string":
            values.append(await runtime.redis.get(key))
        elif kind == "hash":
            values += list((await runtime.redis.hgetall(key)).values())
        elif kind == "set":
            values += list(await runtime.redis.smembers(key))
        elif kind == "stream":
            values += [v for _, fields in await runtime.redis.xrange(key) for v in fields.values()]
    return values


async def test_templates_photos_and_identity_fields_are_not_readable_at_rest(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["7319264"]}, with_proctors=False)
    cid = world.candidate_ids["7319264"]
    stored = await runtime.regional.put(world.exam_id, "face", cid, "template.bin", TEMPLATE)
    raw = await raw_object(runtime.stores, "cn-north", stored.key)
    assert TEMPLATE[:64] not in raw
    assert raw[:3] == b"ed1"
    assert await runtime.regional.get(world.exam_id, stored.key) == TEMPLATE
    values = await _redis_values(runtime, world.exam_id)
    assert values
    assert not [v for v in values if b"7319264" in v or b"Candidate" in v]


async def test_rotating_the_master_key_keeps_old_data_readable(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    settings = runtime.settings
    old, new = settings.master_key_bytes(), os.urandom(32)
    world = await new_exam(client, runtime, {"r1": ["1001"]}, with_proctors=False)
    cid = world.candidate_ids["1001"]
    stored = await runtime.regional.put(world.exam_id, "photos", cid, "sheet.png", b"answers")

    def store(keys: DataKeys) -> RegionalStore:
        return RegionalStore(runtime.stores, keys, runtime.redis)

    with pytest.raises(ConfigError, match="master key"):
        await store(DataKeys(runtime.redis, new, NAMES)).get(world.exam_id, stored.key)
    # Deployed with the new key and the old one as previous: old data reads before rotation.
    rotated = RotatingDataKeys(runtime.redis, new, [old], NAMES)
    assert await store(rotated).get(world.exam_id, stored.key) == b"answers"
    report = await rotate_all(rotated, runtime.redis)
    try:
        assert report.exams >= 1
        # After the rotation the new key alone opens everything, the old one nothing.
        assert (
            await store(DataKeys(runtime.redis, new, NAMES)).get(world.exam_id, stored.key)
            == b"answers"
        )
        with pytest.raises(ConfigError):
            await store(DataKeys(runtime.redis, old, NAMES)).get(world.exam_id, stored.key)
        written = await store(RotatingDataKeys(runtime.redis, new, [], NAMES)).put(
            world.exam_id, "photos", cid, "later.png", b"later"
        )
        assert await store(rotated).get(world.exam_id, written.key) == b"later"
    finally:
        # Give the session's gateway its key back: rotate every data key to the old one.
        await rotate_all(RotatingDataKeys(runtime.redis, old, [new], NAMES), runtime.redis)
    assert (
        await store(DataKeys(runtime.redis, old, NAMES)).get(world.exam_id, stored.key)
        == b"answers"
    )


def test_previous_master_keys_come_from_settings() -> None:
    keys = [base64.urlsafe_b64encode(os.urandom(32)).decode() for _ in range(2)]
    settings = Settings(data_master_keys_previous=",".join(keys))
    assert [base64.urlsafe_b64encode(k).decode() for k in settings.previous_master_keys()] == keys
    with pytest.raises(ValueError, match="32-byte"):
        Settings(data_master_keys_previous="c2hvcnQ=").previous_master_keys()
