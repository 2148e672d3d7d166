"""Keyed pseudonyms of client identifiers (device ids, app session ids).

A pseudonym is an HMAC-SHA256 under `settings.pseudonym_key` with a purpose
prefix, so the same device always maps to the same opaque value (support can
follow it) while nobody without the key can go back, nor link a device
pseudonym to a candidate id made from the same key.
"""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr

_CACHE_LIMIT = 65536


class Pseudonyms:
    def __init__(self, key: SecretStr) -> None:
        self._key = key.get_secret_value().encode()
        self._cache: dict[tuple[str, str], str] = {}

    def of(self, purpose: str, value: str) -> str:
        cached = self._cache.get((purpose, value))
        if cached is not None:
            return cached
        digest = hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256)
        pseudonym = f"{purpose[0]}{digest.hexdigest()[:31]}"
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[(purpose, value)] = pseudonym
        return pseudonym

    def device(self, device_id: str) -> str:
        return self.of("device", device_id)

    def session(self, session_id: str) -> str:
        return self.of("session", session_id)
