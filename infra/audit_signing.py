"""Ed25519 signatures over audit entries and the audit chain head.

An unkeyed hash chain proves nothing against someone who can write the bucket
and Redis: they rewrite an entry, recompute every hash after it and move the
head. Signing each entry and the head with a key that lives only in the
platform's secrets (`EXAMDAY_AUDIT_SIGNING_KEY`) makes such a rewrite show in
`examday audit verify`. The key follows the update signing key's rules
(actors/updates/signing.py): unset in development means a fixed, public
development key; unset anywhere else means nothing can be audited (and
production refuses to start without it), so nothing outside a laptop is
signed with a key everybody knows. It lives in infra, not beside
the update signer, because the audit log itself (infra/audit.py) signs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infra.errors import ConfigError, Unavailable
from infra.settings import Settings

# In development, with no key configured: a fixed, public key; refused anywhere else.
DEV_SEED = b"examday-dev-audit-signing-seed!!"
ALG = "Ed25519"


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def head_message(region: str, seq: int, entry_hash: str) -> bytes:
    """What a head signature covers: a head of one region cannot stand for another's."""
    return f"examday-audit-head\n{region}\n{seq}\n{entry_hash}".encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


class AuditSigner:
    def __init__(self, seed: bytes | None) -> None:
        if seed is not None and len(seed) != 32:
            raise ConfigError("the audit signing key must be 32 bytes", reason="bad_signing_key")
        self._key = Ed25519PrivateKey.from_private_bytes(seed) if seed is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditSigner:
        development = settings.env == "development"
        configured = settings.audit_signing_key
        if configured is None:
            return cls(DEV_SEED if development else None)
        raw = configured.get_secret_value().removeprefix("dev-")
        try:
            seed = _unb64(raw)
        except ValueError:
            raise ConfigError(
                "EXAMDAY_AUDIT_SIGNING_KEY is not urlsafe base64", reason="bad_signing_key"
            ) from None
        if seed == DEV_SEED and not development:
            raise ConfigError(
                "the public dev audit key signs in development only", reason="dev_signing_key"
            )
        return cls(seed)

    def _private(self) -> Ed25519PrivateKey:
        if self._key is None:
            raise Unavailable("no audit signing key is configured", reason="audit_signing_disabled")
        return self._key

    def public_key(self) -> dict[str, str]:
        raw = self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"alg": ALG, "key_id": key_id(raw), "public_key": _b64(raw)}

    @property
    def key_id(self) -> str:
        return self.public_key()["key_id"]

    def sign(self, message: bytes) -> str:
        return _b64(self._private().sign(message))


class AuditVerifier:
    """The published public keys, by key id: what `audit verify` checks signatures with."""

    def __init__(self, public_keys: list[dict[str, str]]) -> None:
        self._keys = {
            k["key_id"]: Ed25519PublicKey.from_public_bytes(_unb64(k["public_key"]))
            for k in public_keys
        }

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        public = self._keys.get(key)
        if public is None:
            return False
        try:
            public.verify(_unb64(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True
