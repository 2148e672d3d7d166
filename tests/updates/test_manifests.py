"""Releases through the API: verified installers, signed manifests, and refusals of bad input."""

from __future__ import annotations

import base64
import hashlib
import secrets

import httpx
from fastapi import FastAPI

from actors.updates.installers import InstallerStore, installer_key
from actors.updates.signing import verify
from tests.ingest.helpers import runtime_of
from tests.support.factories import new_exam, new_release_manager
from tests.updates.helpers import channel, publish


async def test_a_published_manifest_verifies_with_the_published_key(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    _, manager = await new_release_manager(client, runtime)
    chan = channel()
    installer = secrets.token_bytes(10_000)
    release = await publish(client, manager, "windows", chan, "2.0.0", installer=installer)
    assert release["state"] == "ready"
    key = (await client.get("/.well-known/examday-update-key")).json()
    assert key["alg"] == "Ed25519"
    manifest, signature = release["manifest"], release["signature"]
    assert verify(key["public_key"], manifest, signature)
    for position in (0, len(manifest) // 2, len(manifest) - 1):
        tampered = bytearray(manifest.encode())
        tampered[position] ^= 0x01
        assert not verify(key["public_key"], bytes(tampered), signature)
    forged = bytearray(base64.urlsafe_b64decode(signature))
    forged[7] ^= 0x80
    assert not verify(key["public_key"], manifest, base64.urlsafe_b64encode(forged).decode())
    assert f'"sha256":"{hashlib.sha256(installer).hexdigest()}"' in manifest
    assert f'"size":{len(installer)}' in manifest
    listed = await client.get(
        "/v1/updates/releases", params={"platform": "windows", "channel": chan}, headers=manager
    )
    assert [r["version"] for r in listed.json()["releases"]] == ["2.0.0"]


async def test_an_installer_with_the_wrong_sha256_is_refused_and_deleted(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    _, manager = await new_release_manager(client, runtime)
    chan = channel()
    declared = secrets.token_bytes(2048)
    spec = {
        "platform": "macos",
        "channel": chan,
        "version": "1.4.0",
        "installer": {
            "filename": "examday.pkg",
            "size": len(declared),
            "sha256": hashlib.sha256(declared).hexdigest(),
        },
    }
    created = await client.post("/v1/updates/releases", json=spec, headers=manager)
    assert created.status_code == 201, created.text
    ref = {"platform": "macos", "channel": chan, "version": "1.4.0"}
    early = await client.post("/v1/updates/releases/verify", json=ref, headers=manager)
    assert early.status_code == 409
    assert early.json()["reason"] == "installer_missing"
    tampered = bytes([declared[0] ^ 1]) + declared[1:]  # same size, other bytes
    async with httpx.AsyncClient() as s3:
        assert (await s3.put(created.json()["upload"]["url"], content=tampered)).status_code == 200
    refused = await client.post("/v1/updates/releases/verify", json=ref, headers=manager)
    assert refused.status_code == 422
    assert refused.json()["reason"] == "installer_sha256_mismatch"
    # Nothing stays: no object version in the bucket, no release.
    settings = runtime.settings
    store = InstallerStore(runtime.stores, settings.updates.installer_region)
    assert not await store.exists(installer_key("macos", chan, "1.4.0", "examday.pkg"))
    listed = await client.get(
        "/v1/updates/releases", params={"platform": "macos", "channel": chan}, headers=manager
    )
    assert listed.json()["releases"] == []


async def test_bad_release_input_is_refused_with_a_reason(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    _, manager = await new_release_manager(client, runtime)
    chan = channel()
    installer = {"filename": "a.bin", "size": 10, "sha256": "0" * 64}
    base = {"platform": "android", "channel": chan, "version": "1.0.0", "installer": installer}
    cases = [
        ({**base, "platform": "symbian"}, 422, "unknown_platform"),
        ({**base, "version": "1.0.0-beta!"}, 422, "bad_version"),
        ({**base, "version": "v1"}, 422, "bad_version"),
        ({**base, "min_supported": "2.0"}, 422, "bad_min_supported"),
        ({**base, "installer": {**installer, "size": 10**13}}, 413, "installer_too_large"),
        ({**base, "installer": {**installer, "sha256": "xyz"}}, 422, "invalid_input"),
    ]
    for spec, status, reason in cases:
        response = await client.post("/v1/updates/releases", json=spec, headers=manager)
        assert (response.status_code, response.json()["reason"]) == (status, reason), spec
    listed = await client.get(
        "/v1/updates/releases", params={"platform": "android", "channel": chan}, headers=manager
    )
    assert listed.json()["releases"] == []
    check = {"platform": "android", "channel": chan, "device_id": "device-1"}
    checks: list[tuple[dict[str, str], str | None]] = [
        ({**check, "version": "1.0"}, None),
        ({**check, "version": "one"}, "bad_version"),
        ({**check, "platform": "palmos", "version": "1.0"}, "unknown_platform"),
        ({**check, "version": "1.0", "region": "mars-1"}, "unknown_region"),
    ]
    for body, expected in checks:
        answer = await client.post("/v1/updates/check", json=body)
        if expected is None:
            assert answer.json()["status"] == "up_to_date"
        else:
            assert (answer.status_code, answer.json()["reason"]) == (422, expected)
    # Only release managers publish.
    assert (await client.post("/v1/updates/releases", json=base)).status_code == 401
    world = await new_exam(client, runtime, {"r1": ["6101"]})
    proctor = await client.post("/v1/updates/releases", json=base, headers=world.proctors["r1"])
    assert proctor.json()["reason"] == "release_managers_only"
