"""Face checks as the gateway does them: enrolment, 1:1 verification, liveness, the join gate.

Model work goes to the verifier service (`actors.face.client.VerifierClient`); this
module keeps the records in Redis (no biometric data there, see `actors.face.records`)
and the template, the optional enrolment photo and the live frames of failed
verifications in the exam's region (`RegionalStore`, sealed with the exam's data key).
Nothing is stored for an upload the verifier refused.

A candidate gets `exam.face_attempts` verifications that reach a decision; the last
failed one opens a manual review for the proctors of their room (`api.routes.face_reviews`).
Each verification reserves its attempt atomically before the model runs (`_RESERVE`), so
parallel requests cannot spend more than the limit; a request that ends without a decision
(an upload the verifier refused, a busy or failed verifier: 4xx or 503) gives its attempt
back. Candidates learn match or no match, never the score, threshold or margin (a
proctor's review shows the scores).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from typing import Any

from redis.asyncio import Redis

from actors.face import monitor as face_monitor
from actors.face.client import VerifierClient
from actors.face.records import CLEARED, FaceRecord
from actors.face.results import EnrolOutcome
from core import keys
from core.exam import Exam
from core.exams import Candidate
from core.rooms import RoomCalls
from infra.errors import (
    Conflict,
    ExamdayError,
    Forbidden,
    NotFound,
    UnsupportedMediaType,
)
from infra.redis import spend, text
from infra.regional import RegionalStore
from infra.settings import Settings
from ml.images import clean_image

IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
# The movements of `ml.liveness.Movement`, repeated here so that the gateway does not
# import the models (tests check that both lists agree).
MOVEMENTS = ("turn_left", "turn_right", "nod")

# Reserve one verification attempt on the face record: -1 if there is no enrolment, 0 if
# none is left, else the attempt's number; with the record's `enrolled_at`, so that the
# attempt is given back only to the enrolment that lent it.
_RESERVE = """
if redis.call('HEXISTS', KEYS[1], 'template') == 0 then return {-1, ''} end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if n > tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
  return {0, ''}
end
return {n, redis.call('HGET', KEYS[1], 'enrolled_at') or ''}
"""
_GIVE_BACK = """
if redis.call('HGET', KEYS[1], 'enrolled_at') ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') <= 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], 'attempts', -1)
"""


def image_type(content_type: str | None) -> str:
    """The declared media type of an upload, if it is one we take (the bytes are checked later)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in IMAGE_TYPES:
        raise UnsupportedMediaType(
            f"Send the photo as one of {', '.join(IMAGE_TYPES)}, not {kind or 'nothing'}.",
            reason="image_required",
        )
    return kind


class FaceService:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        regional: RegionalStore,
        rooms: RoomCalls,
        verifier: VerifierClient,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.regional = regional
        self.rooms = rooms
        self.verifier = verifier
        self._reserve = redis.register_script(_RESERVE)
        self._give_back = redis.register_script(_GIVE_BACK)

    @classmethod
    async def open(
        cls, settings: Settings, redis: Redis, regional: RegionalStore, rooms: RoomCalls
    ) -> FaceService:
        """Start-up: the verifier pool and the monitor actor exist once this returns."""
        verifier = VerifierClient(settings)
        await verifier.start()
        await asyncio.to_thread(face_monitor.get_or_create, settings)
        return cls(settings, redis, regional, rooms, verifier)

    async def record(self, exam_id: str, cid: str) -> FaceRecord | None:
        return FaceRecord.parse(await self.redis.hgetall(keys.face_record_key(exam_id, cid)))

    # -- enrolment ----------------------------------------------------------------------

    async def enrol(
        self, exam: Exam, cid: str, image: bytes, content_type: str | None, by: str
    ) -> dict[str, Any]:
        kind = image_type(content_type)
        guard = keys.face_enrolling_key(exam.id, cid)
        ttl = int(self.settings.verifier.call_timeout_s) + 30  # outlives a stuck call
        if not await self.redis.set(guard, by, nx=True, ex=ttl):
            raise Conflict("An enrolment of this candidate is running.", reason="enrolment_busy")
        try:
            if by == "candidate" and await self.record(exam.id, cid) is not None:
                raise Conflict(
                    "You are enrolled already; ask the organiser to enrol you again.",
                    reason="already_enrolled",
                )
            outcome = await self.verifier.enrol(image)  # refused uploads stop here
            return await self._store_enrolment(exam, cid, outcome, image, kind, by)
        finally:
            await self.redis.delete(guard)

    async def _store_enrolment(
        self, exam: Exam, cid: str, outcome: EnrolOutcome, image: bytes, kind: str, by: str
    ) -> dict[str, Any]:
        clean = b""
        if exam.keep_enrolment_photo:
            # The verifier accepted the bytes; what is kept is their pixels without
            # metadata (EXIF GPS, XMP, comments), in the type the bytes really are.
            clean, sniffed = await asyncio.to_thread(clean_image, image, self.settings.face)
            kind = f"image/{sniffed}"
        template = await self.regional.put(exam.id, "face", cid, "template.bin", outcome.template)
        photo = ""
        if clean:
            name = f"enrolment.{IMAGE_TYPES[kind]}"
            photo = (
                await self.regional.put(exam.id, "face", cid, name, clean, content_type=kind)
            ).key
        model = f"{outcome.model.backend}/{outcome.model.version}/{outcome.model.dim}"
        fields = {
            "template": template.key,
            "photo": photo,
            "model": model,
            "enrolled_at": repr(time.time()),
            "enrolled_by": by,
            "status": "enrolled",
            "attempts": 0,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.face_record_key(exam.id, cid), keys.face_evidence_key(exam.id, cid))
            pipe.hset(keys.face_record_key(exam.id, cid), mapping=fields)  # type: ignore[arg-type]
            await pipe.execute()
        return {"status": "enrolled", "model": model, "photo_kept": bool(photo)}

    # -- 1:1 verification ---------------------------------------------------------------

    async def verify(
        self, exam: Exam, candidate: Candidate, image: bytes, content_type: str | None
    ) -> dict[str, Any]:
        kind = image_type(content_type)
        record = await self._verifiable(exam.id, candidate.cid)
        await self._spend_request(exam.id, candidate.cid)
        key = keys.face_record_key(exam.id, candidate.cid)
        attempt, enrolled_at = await self._reserve_attempt(key, exam.face_attempts)
        try:
            template = await self.regional.get(exam.id, record.template)
            outcome = await self.verifier.verify(template, image)
        except ExamdayError:  # no decision (refused upload, busy verifier): no attempt
            await self._give_back(keys=[key], args=[enrolled_at])
            raise
        review = None
        if outcome.match:
            await self.redis.hset(key, mapping={"status": "verified", "verified_at": time.time()})
        else:
            failures = await self._record_failure(exam, candidate.cid, image, kind, outcome.score)
            if failures == exam.face_attempts:  # the last decided one, whatever the order
                review = await self._open_review(exam, candidate, record)
        return {
            "match": outcome.match,
            "attempt": attempt,
            "attempts_left": max(0, exam.face_attempts - attempt),
            "status": "verified" if outcome.match else ("review" if review else "enrolled"),
            "review": review,
        }

    async def _reserve_attempt(self, key: str, limit: int) -> tuple[int, str]:
        """One attempt of `limit`, taken before the model runs; refused when none is left."""
        raw = await self._reserve(keys=[key], args=[limit])
        attempt, enrolled_at = int(raw[0]), text(raw[1])
        if attempt < 0:
            raise Conflict("You have no face enrolment for this exam.", reason="not_enrolled")
        if attempt == 0:
            raise Conflict("You have no verification attempts left.", reason="no_attempts_left")
        return attempt, enrolled_at

    async def _record_failure(
        self, exam: Exam, cid: str, image: bytes, kind: str, score: float
    ) -> int:
        """Keep the live frame (and its score) for a proctor's review; the decided failures
        so far (the attempt itself was counted when it was reserved)."""
        name = f"verify-{secrets.token_hex(6)}.{IMAGE_TYPES[kind]}"
        stored = await self.regional.put(exam.id, "evidence", cid, name, image, content_type=kind)
        entry = json.dumps({"key": stored.key, "score": score, "at": time.time()})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(keys.face_evidence_key(exam.id, cid), entry)
            pipe.ltrim(keys.face_evidence_key(exam.id, cid), -exam.face_attempts, -1)
            pipe.hincrby(keys.face_record_key(exam.id, cid), "failures", 1)
            *_, failures = await pipe.execute()
        return int(failures)

    async def status(self, exam: Exam, cid: str) -> dict[str, Any]:
        record = await self.record(exam.id, cid)
        if record is None:
            return {"enrolled": False, "status": None, "attempts": 0}
        review = None
        if record.review:
            raw = await self.redis.hget(keys.face_reviews_key(exam.id), record.review)
            review = {"id": record.review, "status": json.loads(raw)["status"] if raw else None}
        return {
            "enrolled": True,
            "status": record.status,
            "attempts": record.attempts,
            "attempts_left": max(0, exam.face_attempts - record.attempts),
            "review": review,
        }

    async def require_verified(self, exam_id: str, cid: str) -> None:
        """The join gate of an exam with `require_face_verification`: a match and a
        passed liveness challenge (a matching photo held to the camera has no
        liveness), or a proctor's acceptance after a review."""
        record = await self.record(exam_id, cid)
        if record is not None and record.status in CLEARED:
            if record.status != "verified" or record.liveness == "passed":
                return
            raise Forbidden(
                "Pass the liveness challenge before you join.", reason="liveness_required"
            )
        reason = {"review": "face_review_pending", "rejected": "face_rejected"}.get(
            record.status if record else "", "face_verification_required"
        )
        raise Forbidden("Your face must be verified before you join.", reason=reason)

    async def _verifiable(self, exam_id: str, cid: str) -> FaceRecord:
        record = await self.record(exam_id, cid)
        if record is None:
            raise Conflict("You have no face enrolment for this exam.", reason="not_enrolled")
        if record.status in CLEARED:
            raise Conflict("You are verified already.", reason="already_verified")
        if record.status == "review":
            raise Conflict("A proctor is reviewing your verification.", reason="review_pending")
        if record.status == "rejected":
            raise Forbidden("A proctor rejected your verification.", reason="face_rejected")
        return record

    async def _spend_request(self, exam_id: str, cid: str) -> None:
        """Every request that costs model time counts, whatever its outcome."""
        config = self.settings.verifier
        await spend(
            self.redis,
            keys.face_requests_key(exam_id, cid),
            config.verify_window_s,
            config.verify_requests_per_window,
            refusal="Too many face checks; wait before trying again.",
            reason="face_checks_rate_limited",
        )

    async def _open_review(self, exam: Exam, candidate: Candidate, record: FaceRecord) -> str:
        review_id = secrets.token_hex(8)
        live = [
            json.loads(raw)
            for raw in await self.redis.lrange(
                keys.face_evidence_key(exam.id, candidate.cid), 0, -1
            )
        ]
        review = {
            "id": review_id,
            "cid": candidate.cid,
            "room": candidate.room,
            "status": "pending",
            "created_at": time.time(),
            "enrolled_photo": record.photo,
            "live": live,
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.face_reviews_key(exam.id), review_id, json.dumps(review))
            pipe.sadd(keys.face_room_reviews_key(exam.id, candidate.room), review_id)
            pipe.hset(
                keys.face_record_key(exam.id, candidate.cid),
                mapping={"status": "review", "review": review_id},
            )
            await pipe.execute()
        event = {"type": "face_review_requested", "cid": candidate.cid, "review": review_id}
        await self.rooms.append(keys.room_key(exam.id, candidate.room), event)
        return review_id

    # -- liveness ----------------------------------------------------------------------

    async def new_challenge(self, exam_id: str, cid: str) -> dict[str, Any]:
        """One open challenge per candidate; a new one replaces it."""
        movement = secrets.choice(MOVEMENTS)
        nonce = secrets.token_urlsafe(16)
        ttl = self.settings.verifier.liveness_ttl_s
        value = json.dumps({"nonce": nonce, "movement": movement})
        await self.redis.set(keys.face_challenge_key(exam_id, cid), value, ex=ttl)
        face = self.settings.face
        return {
            "nonce": nonce,
            "movement": movement,
            "expires_in": ttl,
            "min_frames": face.liveness_min_frames,
            "max_frames": face.liveness_max_frames,
            "max_frame_bytes": self.settings.verifier.max_frame_bytes,
        }

    async def check_liveness(
        self, exam_id: str, cid: str, nonce: str, frames: list[bytes]
    ) -> dict[str, Any]:
        raw = await self.redis.getdel(keys.face_challenge_key(exam_id, cid))  # single use
        challenge = json.loads(raw) if raw else None
        if challenge is None or not hmac.compare_digest(challenge["nonce"], nonce):
            raise NotFound(
                "No such open challenge; ask for a new one.", reason="challenge_not_found"
            )
        await self._spend_request(exam_id, cid)
        record = await self.record(exam_id, cid)
        template = await self.regional.get(exam_id, record.template) if record else None
        outcome = await self.verifier.liveness(challenge["movement"], nonce, frames, template)
        await self.redis.hset(
            keys.face_record_key(exam_id, cid),
            mapping={"liveness": outcome.reason, "liveness_at": time.time()},
        )
        return {"passed": outcome.passed, "reason": outcome.reason, "movement": outcome.movement}
