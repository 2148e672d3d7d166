"""An exam's privacy policy, version by version, and what withdrawing each consent means.

Kept in core because the gateway's consent checks, the candidate's rights and the
retention of the exam record all read it. A version is stored once and never
rewritten: a consent record names a version, and what the candidate accepted must
still be readable when the record is questioned. Publishing a version moves the
exam's `policy_version`, so a candidate who accepted an older one is asked again.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from redis.asyncio import Redis
from redis.exceptions import WatchError

from core import keys
from core.exam import Exam
from infra.errors import Conflict, NotFound

# The biometric consent has its own version: its text is the platform's (what a face
# template is, where it is kept, for how long), not the organiser's policy.
BIOMETRIC_VERSION = "b1"
MAX_VERSIONS = 200
# The kinds of consent a candidate (or for a minor, their guardian) gives and may withdraw.
CONSENT_KINDS = ("policy", "biometric", "third_party", "guardian")

PolicyText = Annotated[str, StringConstraints(min_length=1, max_length=50_000)]
ChangeText = Annotated[str, StringConstraints(max_length=5_000)]


class Texts(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    zh: PolicyText = Field(alias="zh-CN")
    en: PolicyText


class Changes(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    zh: ChangeText = Field(default="", alias="zh-CN")
    en: ChangeText = ""


class PolicyVersionIn(BaseModel):
    """`PUT /v1/exams/{exam_id}/policy`: one version of the policy, in both languages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]
    effective_at: datetime
    text: Texts
    changes: Changes = Field(default_factory=lambda: Changes())


# What withdrawing each consent does, written out once: the policy page, the rights page
# and docs/privacy.md say the same.
WITHDRAWAL: dict[str, dict[str, str]] = {
    "policy": {
        "zh-CN": "撤回对隐私政策的同意后，您将无法继续参加本场考试：会话和音视频立即结束，"
        "不再收集任何新的个人信息。已收集的数据按保留期限保存和删除。",
        "en": "Withdrawing your consent to the policy ends your part in this exam: your "
        "session and audio/video end at once and nothing new is collected. What was "
        "collected is kept and deleted under the retention periods.",
    },
    "biometric": {
        "zh-CN": "撤回生物识别同意后，您的人脸模板会被立即删除，不再进行人脸核验；"
        "监考员将人工核对您的身份。",
        "en": "Withdrawing your biometric consent deletes your face template at once and "
        "stops face verification; a proctor checks your identity by hand instead.",
    },
    "third_party": {
        "zh-CN": "撤回向第三方提供数据的同意后，今后不再向第三方提供您的数据（法律要求的除外）。",
        "en": "Withdrawing your consent to third-party sharing stops any further sharing "
        "of your data with third parties, except where the law requires it.",
    },
    "guardian": {
        "zh-CN": "监护人撤回同意后，未成年考生不能再参加考试、录入人脸或上传文件，"
        "会话和音视频立即结束。",
        "en": "When a guardian withdraws consent, the minor can no longer take the exam, "
        "enrol a face or upload; their session and audio/video end at once.",
    },
}

BIOMETRIC_TEXT = {
    "zh-CN": "为核验身份，我们会从您的照片中提取人脸特征模板（敏感个人信息），"
    "加密保存在考试所在区域，仅用于本场考试，考试结束后按保留期限删除。"
    "您可以拒绝：拒绝后由监考员人工核对身份，不影响参加考试。",
    "en": "To verify your identity we derive a face template (sensitive personal "
    "information) from your photo, kept encrypted in the exam's region, used for this "
    "exam only and deleted under the retention periods. You may refuse: a proctor then "
    "checks your identity by hand, and you still take the exam.",
}

# The text of an exam whose organiser has not published one (version "1" by default).
DEFAULT_TEXT = {
    "zh-CN": "本平台仅在考试期间收集考试所需的个人信息（身份、音视频、上传的照片和日志），"
    "加密保存在考试所在区域，按保留期限删除。您可以查阅、复制、更正和删除您的数据，"
    "撤回同意，或退出考试。",
    "en": "This platform collects only what the exam needs (identity, audio and video, "
    "photos you share, logs), while the exam runs, encrypted in the exam's region and "
    "deleted under the retention periods. You may see, copy, correct and delete your "
    "data, withdraw consent, or withdraw from the exam.",
}


class PolicyStore:
    """The versions of one exam's policy in Redis (under the exam's prefix)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def publish(self, exam_id: str, body: PolicyVersionIn, by: str) -> dict[str, Any]:
        """Store `body` and make it the exam's current version, in one transaction.

        The same version again with the same text is answered as stored (a retried PUT);
        with another text it is refused 409 `policy_version_exists`: what candidates
        accepted under a version never changes under them."""
        exam_key, versions_key = keys.exam_key(exam_id), keys.exam_policies_key(exam_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(exam_key, versions_key)
                    raw = await pipe.get(exam_key)
                    if raw is None:
                        raise NotFound("no such exam", reason="exam_not_found")
                    exam = Exam.model_validate_json(raw)
                    old = await pipe.hget(versions_key, body.version)
                    stored = _record(body, by, await pipe.hlen(versions_key))
                    if old is not None:
                        kept: dict[str, Any] = json.loads(old)
                        if _same(kept, stored):
                            return kept
                        raise Conflict(
                            f"version {body.version} exists with another text",
                            reason="policy_version_exists",
                        )
                    if stored["seq"] >= MAX_VERSIONS:
                        raise Conflict("too many policy versions", reason="policy_versions_full")
                    exam = exam.model_copy(update={"policy_version": body.version})
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(versions_key, body.version, json.dumps(stored))
                    pipe.set(exam_key, exam.model_dump_json())
                    await pipe.execute()
                    return stored
                except WatchError:
                    continue

    async def versions(self, exam_id: str) -> list[dict[str, Any]]:
        raw = await self.redis.hvals(keys.exam_policies_key(exam_id))
        return sorted((json.loads(r) for r in raw), key=lambda r: int(r["seq"]))

    async def view(self, exam: Exam, accepted: str | None = None) -> dict[str, Any]:
        """The current version (text, effective date) and, for a candidate who accepted
        `accepted`, the changes of every version published after it."""
        history = await self.versions(exam.id)
        current = next((v for v in history if v["version"] == exam.policy_version), None)
        if current is None:
            current = {
                "version": exam.policy_version,
                "effective_at": None,
                "text": DEFAULT_TEXT,
                "changes": {"zh-CN": "", "en": ""},
                "seq": -1,
            }
        after = -1
        if accepted is not None:
            after = next((int(v["seq"]) for v in history if v["version"] == accepted), -1)
        changed = [
            {"version": v["version"], "effective_at": v["effective_at"], "changes": v["changes"]}
            for v in history
            if after < int(v["seq"]) <= int(current["seq"])
        ]
        return {
            "version": current["version"],
            "effective_at": current["effective_at"],
            "text": current["text"],
            "changes": current["changes"],
            "accepted_version": accepted,
            "needs_consent": accepted != current["version"],
            "changed_since_accepted": changed if accepted is not None else [],
            "versions": [v["version"] for v in history],
            "withdrawal": WITHDRAWAL,
            "biometric": {"version": BIOMETRIC_VERSION, "text": BIOMETRIC_TEXT},
        }


def _record(body: PolicyVersionIn, by: str, seq: int) -> dict[str, Any]:
    return {
        "version": body.version,
        "effective_at": body.effective_at.isoformat(),
        "text": body.text.model_dump(by_alias=True),
        "changes": body.changes.model_dump(by_alias=True),
        "published_by": by,
        "published_at": time.time(),
        "seq": seq,
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    fields = ("effective_at", "text", "changes")
    return all(a.get(f) == b.get(f) for f in fields)
