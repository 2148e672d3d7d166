"""Signed, expiring session tokens. Revocation lives in Redis (see actors.accounts.sessions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass
from typing import Literal

from infra.errors import Unauthenticated

# Staff roles, each with the least it needs: proctors their rooms, chief proctors every
# room of the exams assigned to them, examiners the recordings and grading of theirs (no
# live room), organisers their own exams (and the exam staff they create), release
# managers the device updates, admins the staff accounts (and the release of any legal
# hold). The first admin comes from the operator's `examday staff add`.
StaffRole = Literal["proctor", "chief-proctor", "examiner", "organiser", "admin", "release-manager"]
STAFF_ROLES: tuple[StaffRole, ...] = (
    "proctor",
    "chief-proctor",
    "examiner",
    "organiser",
    "admin",
    "release-manager",
)
# The roles an organiser creates and assigns: to a room (proctors) or a whole exam.
EXAM_STAFF_ROLES: tuple[StaffRole, ...] = ("proctor", "chief-proctor", "examiner")
EXAM_WIDE_ROLES: tuple[StaffRole, ...] = ("chief-proctor", "examiner")
Role = Literal["candidate", StaffRole]


@dataclass(frozen=True)
class Claims:
    sid: str  # session id: the revocation handle
    sub: str  # candidate id (opaque) or staff username
    role: Role
    exam: str | None  # a candidate's exam
    exp: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: Claims, key: bytes) -> str:
    payload = _b64(json.dumps(asdict(claims), separators=(",", ":")).encode())
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(token: str, key: bytes, now: float | None = None) -> Claims:
    try:
        payload, mac = token.split(".")
        expected = hmac.new(key, payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise ValueError("signature")
        claims = Claims(**json.loads(_unb64(payload)))
    except (ValueError, TypeError, json.JSONDecodeError):
        raise Unauthenticated("the token is not valid", reason="invalid_token") from None
    if claims.exp < (now or time.time()):
        raise Unauthenticated("the session has expired", reason="token_expired")
    return claims
