"""Ed25519 signatures over update manifests.

The manifest is canonical JSON (sorted keys, no spaces, UTF-8) and is handed
to clients as the exact string that was signed; they verify it with the
public key published at `/.well-known/examday-update-key` before trusting
the installer's size and sha256 in it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infra.errors import ConfigError, Unavailable
from infra.settings import Settings

# In development, with no key configured: a fixed, public key. Anywhere else it would
# let anyone who read this file sign an installer that clients trust.
DEV_SEED = b"examday-dev-update-signing-seed!"


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


class ManifestSigner:
    def __init__(self, seed: bytes | None) -> None:
        if seed is not None and len(seed) != 32:
            raise ConfigError("the update signing key must be 32 bytes", reason="bad_signing_key")
        self._key = Ed25519PrivateKey.from_private_bytes(seed) if seed is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> ManifestSigner:
        development = settings.env == "development"
        configured = settings.update_signing_key
        if configured is None:
            return cls(DEV_SEED if development else None)
        raw = configured.get_secret_value()
        raw = raw.removeprefix("dev-")
        try:
            seed = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except ValueError:
            raise ConfigError(
                "EXAMDAY_UPDATE_SIGNING_KEY is not urlsafe base64", reason="bad_signing_key"
            ) from None
        if seed == DEV_SEED and not development:
            raise ConfigError(
                "the public dev update key signs in development only", reason="dev_signing_key"
            )
        return cls(seed)

    def _private(self) -> Ed25519PrivateKey:
        if self._key is None:
            raise Unavailable(
                "no update signing key is configured", reason="update_signing_disabled"
            )
        return self._key

    def public_key(self) -> dict[str, str]:
        raw = self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"alg": "Ed25519", "key_id": _key_id(raw), "public_key": _b64(raw)}

    @functools.cached_property
    def key_id(self) -> str:
        return self.public_key()["key_id"]

    def sign(self, payload: dict[str, Any]) -> tuple[str, str]:
        """(manifest, signature): the canonical text and its signature, urlsafe base64."""
        manifest = canonical(payload)
        return manifest, _b64(self._private().sign(manifest.encode()))


def verify(public_key: str, manifest: str | bytes, signature: str) -> bool:
    """What a client does: check the manifest bytes against the published key."""
    key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(public_key))
    data = manifest.encode() if isinstance(manifest, str) else manifest
    try:
        key.verify(base64.urlsafe_b64decode(signature), data)
    except InvalidSignature:
        return False
    return True
