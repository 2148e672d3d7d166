"""Envelope encryption of personal data: AES-256-GCM with a data key per exam.

Each exam has its own random data key, stored in Redis only wrapped (encrypted)
by the master key from settings. Ciphertexts name the data-key version they
were sealed with, so rotating the master key only re-wraps data keys; old
ciphertexts stay readable.

    sealed = b"ed1" | key_version (4 bytes) | nonce (12) | AES-GCM(ciphertext+tag)

The associated data binds a ciphertext to its exam and purpose (a name cannot
be swapped into a template field, nor moved to another exam).

Text kept inside JSON records (a rights request, a review note, a room's free text)
is sealed with `seal_text` and opened with `open_text`: the same ciphertext, base64.
"""

from __future__ import annotations

import base64
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis.asyncio import Redis

from infra.errors import ConfigError, Forbidden
from infra.names import StateNames
from infra.redis import blob

MAGIC = b"ed1"
_HEADER = struct.Struct(">3sI12s")


def _wrap(master: bytes, exam_id: str, version: int, data_key: bytes) -> bytes:
    nonce = os.urandom(12)
    aad = f"dek:{exam_id}:{version}".encode()
    return nonce + AESGCM(master).encrypt(nonce, data_key, aad)


def _unwrap(master: bytes, exam_id: str, version: int, wrapped: bytes) -> bytes:
    aad = f"dek:{exam_id}:{version}".encode()
    try:
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], aad)
    except InvalidTag:
        raise ConfigError(
            f"data key {version} of exam {exam_id} does not open with the master key",
            reason="master_key_mismatch",
        ) from None


class DataKeys:
    """Per-exam data keys in Redis, wrapped by the master key; an in-process cache of open keys."""

    def __init__(self, redis: Redis, master_key: bytes, names: StateNames) -> None:
        if len(master_key) != 32:
            raise ConfigError("the master key must be 32 bytes", reason="bad_master_key")
        self._redis = redis
        self._master = master_key
        self.names = names
        self._open: dict[tuple[str, int], bytes] = {}
        self._current: dict[str, int] = {}

    def _key(self, exam_id: str) -> str:
        return self.names.data_key(exam_id)

    async def current(self, exam_id: str) -> tuple[int, bytes]:
        version = self._current.get(exam_id)
        if version is not None and (exam_id, version) in self._open:
            return version, self._open[(exam_id, version)]
        raw = await self._redis.hgetall(self._key(exam_id))
        if not raw:
            return await self._create(exam_id)
        version = max(int(v) for v in raw)
        self._current[exam_id] = version
        return version, await self.get(exam_id, version, blob(raw[str(version).encode()]))

    async def _create(self, exam_id: str) -> tuple[int, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        wrapped = _wrap(self._master, exam_id, 1, data_key)
        created = await self._redis.hsetnx(self._key(exam_id), "1", wrapped)
        if not created:  # another process won the race: use its key
            return await self.current(exam_id)
        self._open[(exam_id, 1)] = data_key
        self._current[exam_id] = 1
        return 1, data_key

    async def get(self, exam_id: str, version: int, wrapped: bytes | None = None) -> bytes:
        cached = self._open.get((exam_id, version))
        if cached is not None:
            return cached
        if wrapped is None:
            stored = await self._redis.hget(self._key(exam_id), str(version))
            if stored is None:
                raise Forbidden("data key is gone: the data was deleted", reason="data_key_deleted")
            wrapped = blob(stored)
        data_key = _unwrap(self._master, exam_id, version, wrapped)
        self._open[(exam_id, version)] = data_key
        return data_key

    async def seal(self, exam_id: str, purpose: str, plaintext: bytes) -> bytes:
        version, data_key = await self.current(exam_id)
        nonce = os.urandom(12)
        aad = f"{exam_id}:{purpose}".encode()
        return _HEADER.pack(MAGIC, version, nonce) + AESGCM(data_key).encrypt(nonce, plaintext, aad)

    async def open(self, exam_id: str, purpose: str, sealed: bytes) -> bytes:
        magic, version, nonce = _HEADER.unpack_from(sealed)
        if magic != MAGIC:
            raise Forbidden("not an examday ciphertext", reason="bad_ciphertext")
        data_key = await self.get(exam_id, version)
        aad = f"{exam_id}:{purpose}".encode()
        try:
            return AESGCM(data_key).decrypt(nonce, sealed[_HEADER.size :], aad)
        except InvalidTag:
            raise Forbidden("ciphertext does not open", reason="bad_ciphertext") from None

    async def seal_text(self, exam_id: str, purpose: str, text: str) -> str:
        """`text` sealed for a JSON record: the ciphertext of `seal`, base64."""
        return base64.b64encode(await self.seal(exam_id, purpose, text.encode())).decode()

    async def open_text(self, exam_id: str, purpose: str, sealed: str) -> str:
        """The text `seal_text` sealed with the same exam and purpose."""
        return (await self.open(exam_id, purpose, base64.b64decode(sealed))).decode()

    def forget(self, exam_id: str) -> None:
        """Drop cached keys of an exam (after its data key was destroyed)."""
        self._current.pop(exam_id, None)
        for cached in [k for k in self._open if k[0] == exam_id]:
            del self._open[cached]

    async def rewrap(self, exam_id: str, new_master: bytes) -> int:
        """Re-wrap every data key of an exam under a new master key (rotation)."""
        raw = await self._redis.hgetall(self._key(exam_id))
        rewrapped = {}
        for field, wrapped in raw.items():
            version = int(field)
            data_key = _unwrap(self._master, exam_id, version, blob(wrapped))
            rewrapped[str(version)] = _wrap(new_master, exam_id, version, data_key)
        if rewrapped:
            await self._redis.hset(self._key(exam_id), mapping=rewrapped)  # type: ignore[arg-type]
        return len(rewrapped)
