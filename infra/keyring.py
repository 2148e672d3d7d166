"""Master-key rotation for the per-exam data keys of `infra.crypto`.

After a rotation the settings name the new master key and keep the replaced
ones in `data_master_keys_previous`. `RotatingDataKeys` opens a data key with
the current master key and falls back to the previous ones, so data sealed
before the rotation stays readable while `rotate_all` re-wraps every exam's
data keys under the new key (after which the previous keys can be dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from infra.crypto import DataKeys, _unwrap, _wrap
from infra.errors import ConfigError, Forbidden
from infra.names import StateNames
from infra.redis import blob, text
from infra.settings import Settings

_SCAN_COUNT = 500
_MAX_SCAN_ROUNDS = 100_000


class RotatingDataKeys(DataKeys):
    """`DataKeys` that also opens data keys wrapped by a previous master key."""

    def __init__(
        self, redis: Redis, master_key: bytes, previous: list[bytes], names: StateNames
    ) -> None:
        super().__init__(redis, master_key, names)
        self._previous = list(previous)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, names: StateNames) -> RotatingDataKeys:
        return cls(redis, settings.master_key_bytes(), settings.previous_master_keys(), names)

    async def get(self, exam_id: str, version: int, wrapped: bytes | None = None) -> bytes:
        cached = self._open.get((exam_id, version))
        if cached is not None:
            return cached
        if wrapped is None:
            stored = await self._redis.hget(self._key(exam_id), str(version))
            if stored is None:
                raise Forbidden("data key is gone: the data was deleted", reason="data_key_deleted")
            wrapped = blob(stored)
        data_key = self.unwrap_any(exam_id, version, wrapped)
        self._open[(exam_id, version)] = data_key
        return data_key

    def unwrap_any(self, exam_id: str, version: int, wrapped: bytes) -> bytes:
        for master in (self._master, *self._previous):
            try:
                return _unwrap(master, exam_id, version, wrapped)
            except ConfigError:
                continue
        raise ConfigError(
            f"data key {version} of exam {exam_id} opens with no configured master key",
            reason="master_key_mismatch",
        )

    async def rewrap_current(self, exam_id: str) -> int:
        """Re-wrap every data key of an exam under the current master key."""
        raw = await self._redis.hgetall(self._key(exam_id))
        rewrapped: dict[str, bytes] = {}
        for field, wrapped in raw.items():
            version = int(text(field))
            data_key = self.unwrap_any(exam_id, version, blob(wrapped))
            rewrapped[str(version)] = _wrap(self._master, exam_id, version, data_key)
        if rewrapped:
            await self._redis.hset(self._key(exam_id), mapping=rewrapped)  # type: ignore[arg-type]
        return len(rewrapped)


@dataclass(frozen=True)
class RotationReport:
    exams: int
    data_keys: int


async def rotate_all(keys: RotatingDataKeys, redis: Redis) -> RotationReport:
    """Re-wrap the data keys of every exam under the current master key (idempotent)."""
    exams = data_keys = 0
    cursor: int = 0
    for _ in range(_MAX_SCAN_ROUNDS):
        cursor, found = await redis.scan(
            cursor, match=keys.names.data_keys_pattern, count=_SCAN_COUNT
        )
        for key in found:
            exam_id = keys.names.exam_of_data_key(text(key))
            data_keys += await keys.rewrap_current(exam_id)
            exams += 1
        if cursor == 0:
            break
    return RotationReport(exams=exams, data_keys=data_keys)
