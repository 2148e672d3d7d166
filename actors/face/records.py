"""The small Redis record of a candidate's face enrolment: no biometric data in it.

    examday:exam:{exam}:face:{cid}   hash
        template     object key of the sealed template in the exam's region
        photo        object key of the sealed enrolment photo, or "" if not kept
        model        backend/version/dim of the model that made the template
        enrolled_at  epoch seconds; a new enrolment gives a new value
        enrolled_by  "organiser" or "candidate"
        status       enrolled | verified | review | accepted | rejected
        attempts     1:1 verifications that reached a decision or are running (reserved)
        failures     of those, the ones that decided no match (the last one opens a review)
        review       id of the manual review, once there is one
        liveness     passed reason of the last liveness check, and liveness_at

The template and photo bytes live only in the region's object store (`RegionalStore`,
class `face`, sealed with the exam's data key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.redis import text

STATUSES = ("enrolled", "verified", "review", "accepted", "rejected")
CLEARED = frozenset({"verified", "accepted"})  # may join an exam that requires verification


@dataclass(frozen=True)
class FaceRecord:
    template: str
    photo: str | None
    model: str
    enrolled_at: float
    enrolled_by: str
    status: str
    attempts: int
    review: str | None
    liveness: str | None = None  # "passed" or why the last challenge failed

    @classmethod
    def parse(cls, raw: Mapping[Any, Any]) -> FaceRecord | None:
        fields = {text(k): text(v) for k, v in raw.items()}
        if not fields.get("template"):
            return None
        return cls(
            template=fields["template"],
            photo=fields.get("photo") or None,
            model=fields.get("model", ""),
            enrolled_at=float(fields.get("enrolled_at", 0)),
            enrolled_by=fields.get("enrolled_by", ""),
            status=fields.get("status", "enrolled"),
            attempts=int(fields.get("attempts", 0)),
            review=fields.get("review") or None,
            liveness=fields.get("liveness") or None,
        )
