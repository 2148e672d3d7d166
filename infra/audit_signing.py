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

import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from infra.ed25519_signer import SeedSigner, unb64
from infra.settings import Settings

# In development, with no key configured: a fixed, public key; refused anywhere else.
DEV_SEED = b"examday-dev-audit-signing-seed!!"
ALG = "Ed25519"


def canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def head_message(region: str, seq: int, entry_hash: str) -> bytes:
    """What a head signature covers: a head of one region cannot stand for another's."""
    return f"examday-audit-head\n{region}\n{seq}\n{entry_hash}".encode()


class AuditSigner(SeedSigner):
    what = "audit"
    setting = "EXAMDAY_AUDIT_SIGNING_KEY"
    dev_seed = DEV_SEED
    disabled_reason = "audit_signing_disabled"

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditSigner:
        return cls.from_secret(settings.audit_signing_key, settings.env)

    def sign(self, message: bytes) -> str:
        return self.sign_bytes(message)


class AuditVerifier:
    """The published public keys, by key id: what `audit verify` checks signatures with."""

    def __init__(self, public_keys: list[dict[str, str]]) -> None:
        self._keys = {
            k["key_id"]: Ed25519PublicKey.from_public_bytes(unb64(k["public_key"]))
            for k in public_keys
        }

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        public = self._keys.get(key)
        if public is None:
            return False
        try:
            public.verify(unb64(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True
