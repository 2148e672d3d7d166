"""Every Redis key of the platform, in one place: no `examday:` key is spelt anywhere else.

Subsystems meet in Redis: the privacy subsystem deletes what rooms, face checks, media
and log ingestion stored; the update gate reads what ingestion counted. So the names of
what they store belong to none of them. Each section names its writer; a key's hash tag
(`{...}`) keeps the keys of one room on one Redis Cluster slot.
"""

from __future__ import annotations

INGEST_SHARD_KIND = "ingest"
INGEST_GROUP = "flush"
INGEST_STREAMS = "examday:ingest:streams"
INGEST_DIMS = "examday:ingest:dims"
INGEST_CRASHES = "examday:ingest:crashes"
ANONYMOUS = "_anonymous"
ANALYTICS_TTL_SECONDS = 400 * 86400


def ingest_shard_name(index: int) -> str:
    return f"log-ingest-{index}"


def ingest_stream_key(shard: str) -> str:
    return f"examday:ingest:{shard}:stream"


def ingest_marks_key(stream: str) -> str:
    """Which plan each stream entry belongs to, while that plan is being flushed."""
    return f"{stream}:plans"


def ingest_plan_key(plan_id: str) -> str:
    return f"examday:ingest:plan:{plan_id}"


def ingest_seen_key(shard: str, bucket: int) -> str:
    return f"examday:ingest:{shard}:seen:{bucket}"


def ingest_rate_key(device: str) -> str:
    return f"examday:ingest:rate:{device}"


def dim(platform: str, version: str, model: str = "*") -> str:
    """An aggregate dimension: platform|app version|device model ('*' = all models)."""
    return f"{platform}|{version}|{model}"


def ingest_sessions_key(dimension: str) -> str:
    return f"examday:ingest:sessions:{dimension}"


def ingest_crashed_key(dimension: str) -> str:
    return f"examday:ingest:crashed:{dimension}"


def analytics_key(day: str) -> str:
    return f"examday:analytics:{day}"


def ingest_support_key(scope: str, by: str, value: str) -> str:
    """Recent records of one pseudonymised device (by='d') or session (by='s') in a scope."""
    return f"examday:ingest:support:{scope}:{by}:{value}"


# -- accounts (actors.accounts) ---------------------------------------------------


def session_key(sid: str) -> str:
    return f"examday:session:{sid}"


# -- rooms (actors.rooms): journals, written by the room shards -------------------


def room_key(exam_id: str, room_id: str) -> str:
    """A room's name on the shard ring and in its journal's hash tag."""
    return f"{exam_id}/{room_id}"


def room_events_key(room: str) -> str:
    return f"examday:{{{room}}}:events"


def room_owner_key(room: str) -> str:
    return f"examday:{{{room}}}:owner"


# -- face checks (actors.face) ----------------------------------------------------


def face_record_key(exam_id: str, cid: str) -> str:
    return f"examday:exam:{exam_id}:face:{cid}"


def face_evidence_key(exam_id: str, cid: str) -> str:
    """Object keys of the live frames of failed verifications (for the manual review)."""
    return f"examday:exam:{exam_id}:face:{cid}:evidence"


def face_requests_key(exam_id: str, cid: str) -> str:
    return f"examday:exam:{exam_id}:face:{cid}:requests"


def face_challenge_key(exam_id: str, cid: str) -> str:
    """The candidate's one open liveness challenge (nonce and movement), with a TTL."""
    return f"examday:exam:{exam_id}:face:{cid}:liveness"


def face_reviews_key(exam_id: str) -> str:
    return f"examday:exam:{exam_id}:face-reviews"


def face_room_reviews_key(exam_id: str, room: str) -> str:
    return f"examday:exam:{exam_id}:room:{room}:face-reviews"


# -- media (actors.media): the recordings index -----------------------------------


def recording_keys(exam_id: str, cid: str) -> tuple[str, str]:
    """A candidate's segments by start time (sorted set), and their entries (hash)."""
    base = f"examday:media:recordings:{exam_id}:{cid}"
    return base, f"{base}:entries"
