"""An insider with bucket and Redis access cannot rewrite the audit chain unnoticed.

SeaweedFS refuses what Object Lock (COMPLIANCE) forbids: deleting a locked version,
shortening or weakening its retention. What S3 allows even on a locked key (a new
version on top, a delete marker) and what Redis allows (moving the head back) is
found by `examday audit verify`, by kind. Every tampering is undone before the test
ends (an unlocked version or a delete marker can be removed), so the session's
chain verifies again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI

from api.runtime import Runtime
from cluster.privacy_cli import verify_regions
from core import keys
from infra.audit import AuditLog, entry_hash, object_key, signed_bytes
from infra.redis import text
from infra.settings import Settings, settings_to_env
from tests.privacy.conftest import ended_exam, raw_object, runtime_of
from tests.privacy.helpers import platform_data

REGION = "cn-north"


async def _receipt(client: httpx.AsyncClient, runtime: Runtime) -> int:
    """The seq of a deletion receipt of a fresh retention run."""
    world = await ended_exam(client, runtime, {"r1": ["1001"]}, region=REGION)
    await platform_data(runtime, world.exam_id, world.candidate_ids["1001"])
    run = await client.post(f"/v1/exams/{world.exam_id}/retention/runs", headers=world.organiser)
    assert run.status_code == 200, run.text
    return int(run.json()["receipts"][-1])


async def _kinds(settings: Settings) -> set[str]:
    [report] = await verify_regions(settings, REGION)
    return {f.kind for f in report.failures}


async def _call(runtime: Runtime, operation: str, **params: Any) -> Any:
    return await runtime.stores.call(
        REGION, operation, Bucket=runtime.stores.bucket(REGION), **params
    )


async def test_a_locked_entry_cannot_be_deleted_or_unlocked_and_a_rewrite_is_found(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    seq = await _receipt(client, runtime)
    key = object_key(seq)
    listed = await _call(runtime, "list_object_versions", Prefix=key)
    [version] = [str(v["VersionId"]) for v in listed["Versions"]]
    meta = await _call(runtime, "head_object", Key=key, VersionId=version)
    assert meta["ObjectLockMode"] == "COMPLIANCE"
    days = settings.privacy.audit_retention_days
    assert meta["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=days - 1)

    # What the store enforces.
    with pytest.raises(ClientError) as refused:
        await _call(runtime, "delete_object", Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    batch = await _call(
        runtime, "delete_objects", Delete={"Objects": [{"Key": key, "VersionId": version}]}
    )
    assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"]
    sooner = datetime.now(UTC) + timedelta(hours=1)
    for mode, until in (("COMPLIANCE", sooner), ("GOVERNANCE", sooner)):
        with pytest.raises(ClientError):
            await _call(
                runtime,
                "put_object_retention",
                Key=key,
                VersionId=version,
                Retention={"Mode": mode, "RetainUntilDate": until},
                BypassGovernanceRetention=True,
            )
    meta = await _call(runtime, "head_object", Key=key, VersionId=version)
    assert meta["ObjectLockMode"] == "COMPLIANCE"
    assert await _kinds(settings) == set()

    # What it does not: a new version on top of the locked one, and a delete marker.
    entry = json.loads(await raw_object(runtime.stores, REGION, key))
    entry["body"]["clause"] = "nothing was deleted"
    entry["hash"] = entry_hash(entry)
    rewrite = await _call(runtime, "put_object", Key=key, Body=json.dumps(entry).encode())
    try:
        assert {"rewritten", "signature", "lock"} <= await _kinds(settings)
    finally:
        await _call(runtime, "delete_object", Key=key, VersionId=rewrite["VersionId"])
    marker = await _call(runtime, "delete_object", Key=key)
    assert marker["DeleteMarker"] is True
    try:
        assert await _kinds(settings) == {"deleted"}
    finally:
        await _call(runtime, "delete_object", Key=key, VersionId=marker["VersionId"])
    assert await _kinds(settings) == set()


async def test_one_changed_byte_fails_the_signature_even_with_its_hash_recomputed(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    seq = await _receipt(client, runtime)
    key = object_key(seq)
    original = json.loads(await raw_object(runtime.stores, REGION, key))

    # Anyone can check a receipt with the published key.
    [published] = (await client.get("/.well-known/examday-audit-keys")).json()["keys"]
    assert published["key_id"] == original["key_id"]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(published["public_key"]))
    public.verify(base64.urlsafe_b64decode(original["sig"]), signed_bytes(original))

    # One byte of one object's size, and a hash that matches it again: only the key tells.
    forged = json.loads(json.dumps(original))
    forged["body"]["objects"][0]["size"] ^= 1
    forged["hash"] = entry_hash(forged)
    rewrite = await _call(runtime, "put_object", Key=key, Body=json.dumps(forged).encode())
    env = {**os.environ, **settings_to_env(settings)}
    command = [sys.executable, "-m", "cluster.cli", "audit", "verify", "--region", REGION]
    try:
        [report] = await verify_regions(settings, REGION)
        failed = {(f.kind, f.seq) for f in report.failures}
        assert ("signature", seq) in failed
        assert ("hash", seq) not in failed
        shown = await asyncio.to_thread(
            subprocess.run, command, env=env, capture_output=True, text=True
        )
        assert shown.returncode == 1
        assert f"signature: entry {seq} does not match its signature" in shown.stdout
    finally:
        await _call(runtime, "delete_object", Key=key, VersionId=rewrite["VersionId"])
    clean = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr


async def _head(runtime: Runtime, log: AuditLog) -> dict[str, str]:
    raw = await runtime.redis.hgetall(log.head_key)
    return {text(k): text(v) for k, v in raw.items()}


async def test_a_truncated_chain_is_found_by_its_signed_head(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    runtime = runtime_of(app)
    await _receipt(client, runtime)
    log = AuditLog(runtime.stores, runtime.redis, REGION, keys.STATE_NAMES)
    earlier = await _head(runtime, log)
    await _receipt(client, runtime)
    current = await _head(runtime, log)
    assert int(current["seq"]) > int(earlier["seq"])
    last = object_key(int(current["seq"]))
    try:
        # An earlier head, validly signed, replayed: the entries after it are still there.
        await runtime.redis.hset(log.head_key, mapping={k: v for k, v in earlier.items()})
        assert await _kinds(settings) == {"truncated"}
        # And hidden behind a delete marker: still there, as versions.
        marker = await _call(runtime, "delete_object", Key=last)
        try:
            assert await _kinds(settings) == {"truncated"}
        finally:
            await _call(runtime, "delete_object", Key=last, VersionId=marker["VersionId"])
        # A head made up for the entry before the last: no valid signature.
        before = await log.read(int(current["seq"]) - 1)
        await runtime.redis.hset(
            log.head_key, mapping={"seq": before.seq, "hash": before.hash, "sig": "AAAA"}
        )
        assert await _kinds(settings) == {"head_signature", "truncated"}
    finally:
        await runtime.redis.hset(log.head_key, mapping={k: v for k, v in current.items()})
    assert await _kinds(settings) == set()
