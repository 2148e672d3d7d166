"""Policy versions: the organiser publishes one, a candidate of an older one is asked again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from tests.privacy.conftest import image_bytes, image_headers, runtime_of
from tests.support.factories import joined_candidate, new_exam


def version(name: str, zh: str, en: str, changes_en: str = "") -> dict[str, Any]:
    return {
        "version": name,
        "effective_at": datetime(2026, 3, 1, tzinfo=UTC).isoformat(),
        "text": {"zh-CN": zh, "en": en},
        "changes": {"zh-CN": f"变更:{changes_en}", "en": changes_en},
    }


async def test_a_new_version_asks_everyone_again_and_shows_what_changed(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    runtime = runtime_of(app)
    world = await new_exam(client, runtime, {"r1": ["1001"]})
    policy = f"/v1/exams/{world.exam_id}/policy"
    me = await joined_candidate(client, world.exam_id, "1001")

    # Before any publication: the platform's own text under the exam's version "1".
    shown = (await client.get("/v1/me/policy", headers=me)).json()
    assert (shown["version"], shown["needs_consent"]) == ("1", False)
    assert shown["text"]["zh-CN"]
    assert shown["text"]["en"]
    assert set(shown["withdrawal"]) == {"policy", "biometric", "third_party", "guardian"}

    v2 = version("2", "第二版", "Second edition", "recordings kept 60 days")
    put = await client.put(policy, json=v2, headers=world.organiser)
    assert put.status_code == 200, put.text
    assert put.json()["version"] == "2"
    # The same version again: the same text is answered as stored, another is refused.
    assert (await client.put(policy, json=v2, headers=world.organiser)).status_code == 200
    changed = version("2", "第二版", "Second edition, changed")
    refused = await client.put(policy, json=changed, headers=world.organiser)
    assert (refused.status_code, refused.json()["reason"]) == (409, "policy_version_exists")
    v3 = version("3", "第三版", "Third edition", "a contact address")
    assert (await client.put(policy, json=v3, headers=world.organiser)).status_code == 200

    # The candidate who accepted "1" is refused until they accept "3", and sees both changes.
    for path, kwargs in (
        ("/v1/me/join", {"json": {"network": "wifi"}, "headers": me}),
        (
            "/v1/uploads/photos",
            {"content": image_bytes(), "headers": image_headers(me)},
        ),
    ):
        answer = await client.post(path, **kwargs)
        assert (answer.status_code, answer.json()["reason"]) == (403, "consent_required"), path
    shown = (await client.get("/v1/me/policy", headers=me)).json()
    assert shown["version"] == "3"
    assert shown["needs_consent"] is True
    assert shown["text"] == {"zh-CN": "第三版", "en": "Third edition"}
    assert shown["effective_at"].startswith("2026-03-01")
    assert [c["changes"]["en"] for c in shown["changed_since_accepted"]] == [
        "recordings kept 60 days",
        "a contact address",
    ]
    stale = await client.post("/v1/me/consent", json={"policy_version": "2"}, headers=me)
    assert stale.json()["reason"] == "stale_policy_version"
    accepted = await client.post("/v1/me/consent", json={"policy_version": "3"}, headers=me)
    assert accepted.status_code == 204
    assert (
        await client.post("/v1/me/join", json={"network": "wifi"}, headers=me)
    ).status_code == 200
    assert (await client.get("/v1/me/policy", headers=me)).json()["changed_since_accepted"] == []

    # The organiser reads every version; nobody else writes one; bad bodies are refused.
    history = (await client.get(policy, headers=world.organiser)).json()["history"]
    assert [h["version"] for h in history] == ["2", "3"]
    assert (await client.put(policy, json=v3, headers=world.proctors["r1"])).status_code == 403
    other = await new_exam(client, runtime, {"r1": ["1001"]}, with_proctors=False)
    assert (await client.put(policy, json=v3, headers=other.organiser)).status_code == 404
    no_en = {**v3, "version": "4", "text": {"zh-CN": "第四版"}}
    assert (await client.put(policy, json=no_en, headers=world.organiser)).status_code == 422
    assert (await runtime.exams.get(world.exam_id)).policy_version == "3"
