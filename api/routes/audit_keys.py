"""The public half of the audit signing key, for anyone who checks receipts.

A deletion receipt is evidence for candidates, organisers and authorities, not
only for the platform: they check its Ed25519 signature (infra/audit_signing.py)
against this key, fetched once and pinned, without any account. It needs no
authentication because a public key is public; serving it from the gateway
rather than the bucket keeps it out of reach of whoever can write the bucket.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import RuntimeDep
from infra.audit_signing import AuditSigner

router = APIRouter(tags=["privacy"])


@router.get("/.well-known/examday-audit-keys")
async def audit_keys(runtime: RuntimeDep) -> dict[str, list[dict[str, str]]]:
    """The keys audit entries and chain heads are signed with, by `key_id` (503
    `audit_signing_disabled` in production without a key)."""
    return {"keys": [AuditSigner.from_settings(runtime.settings).public_key()]}
