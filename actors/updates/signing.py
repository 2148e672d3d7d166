"""Ed25519 signatures over update manifests.

The manifest is canonical JSON (sorted keys, no spaces, UTF-8) and is handed
to clients as the exact string that was signed; they verify it with the
public key published at `/.well-known/examday-update-key` before trusting
the installer's size and sha256 in it.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from infra.ed25519_signer import SeedSigner
from infra.settings import Settings

# In development, with no key configured: a fixed, public key. Anywhere else it would
# let anyone who read this file sign an installer that clients trust.
DEV_SEED = b"examday-dev-update-signing-seed!"


def canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class ManifestSigner(SeedSigner):
    what = "update"
    setting = "EXAMDAY_UPDATE_SIGNING_KEY"
    dev_seed = DEV_SEED
    disabled_reason = "update_signing_disabled"

    @classmethod
    def from_settings(cls, settings: Settings) -> ManifestSigner:
        return cls.from_secret(settings.update_signing_key, settings.env)

    def sign(self, payload: dict[str, Any]) -> tuple[str, str]:
        """(manifest, signature): the canonical text and its signature, urlsafe base64."""
        manifest = canonical(payload)
        return manifest, self.sign_bytes(manifest.encode())


def verify(public_key: str, manifest: str | bytes, signature: str) -> bool:
    """What a client does: check the manifest bytes against the published key."""
    key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(public_key))
    data = manifest.encode() if isinstance(manifest, str) else manifest
    try:
        key.verify(base64.urlsafe_b64decode(signature), data)
    except InvalidSignature:
        return False
    return True
