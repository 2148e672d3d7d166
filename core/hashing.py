"""Rendezvous (highest-random-weight) hashing of keys onto named shards.

Every gateway that knows the same shard names picks the same owner for a key,
with no coordination; adding or removing one of N shards moves only the keys
that it wins or held, about 1/N of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from infra.errors import Unavailable


def weight(key: str, shard: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, shards: Iterable[str]) -> str:
    best: tuple[int, str] | None = None
    for shard in shards:
        candidate = (weight(key, shard), shard)
        if best is None or candidate > best:
            best = candidate
    if best is None:
        raise Unavailable("no shard is registered", reason="no_shards", retry_after=2)
    return best[1]


def ranked(key: str, shards: Sequence[str]) -> list[str]:
    """All shards, best first: the owner, then where the key goes if the owner leaves."""
    return sorted(shards, key=lambda shard: (weight(key, shard), shard), reverse=True)
