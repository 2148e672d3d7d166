"""An Ed25519 signing key from settings, for the two things the platform signs: update
manifests (`actors.updates.signing`) and audit receipts (`infra.audit_signing`).

Both keys follow one rule, so it is written once: a 32-byte seed in urlsafe base64
(a `dev-` prefix marks a placeholder); unset in development means a fixed, public
development seed; unset anywhere else means nothing can be signed (production refuses
to start without the key), and the public development seed is refused outside
development, so nothing beyond a laptop is signed with a key everybody knows.
"""

from __future__ import annotations

import base64
import hashlib
from typing import ClassVar, Self

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import SecretStr

from infra.errors import ConfigError, Unavailable


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(raw_public_key: bytes) -> str:
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


class SeedSigner:
    """A signer whose key may be absent: signing then answers 503 with `disabled_reason`."""

    # What signs, as errors name it ("update", "audit"), its setting, and its dev seed.
    what: ClassVar[str]
    setting: ClassVar[str]
    dev_seed: ClassVar[bytes]
    disabled_reason: ClassVar[str]

    def __init__(self, seed: bytes | None) -> None:
        if seed is not None and len(seed) != 32:
            raise ConfigError(
                f"the {self.what} signing key must be 32 bytes", reason="bad_signing_key"
            )
        self._key = Ed25519PrivateKey.from_private_bytes(seed) if seed is not None else None

    @classmethod
    def from_secret(cls, configured: SecretStr | None, env: str) -> Self:
        development = env == "development"
        if configured is None:
            return cls(cls.dev_seed if development else None)
        try:
            seed = unb64(configured.get_secret_value().removeprefix("dev-"))
        except ValueError:
            raise ConfigError(
                f"{cls.setting} is not urlsafe base64", reason="bad_signing_key"
            ) from None
        if seed == cls.dev_seed and not development:
            raise ConfigError(
                f"the public dev {cls.what} key signs in development only",
                reason="dev_signing_key",
            )
        return cls(seed)

    def _private(self) -> Ed25519PrivateKey:
        if self._key is None:
            raise Unavailable(
                f"no {self.what} signing key is configured", reason=self.disabled_reason
            )
        return self._key

    def public_key(self) -> dict[str, str]:
        raw = self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"alg": "Ed25519", "key_id": key_id(raw), "public_key": b64(raw)}

    @property
    def key_id(self) -> str:
        return self.public_key()["key_id"]

    def sign_bytes(self, message: bytes) -> str:
        return b64(self._private().sign(message))
