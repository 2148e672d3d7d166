"""Every Redis key of the platform, in one place: no `examday:` key is spelt anywhere else.

Subsystems meet in Redis: the privacy subsystem deletes what rooms, face checks, media
and log ingestion stored; the update gate reads what ingestion counted. So the names of
what they store belong to none of them. Each section names its writer; a key's hash tag
(`{...}`) keeps the keys of one room on one Redis Cluster slot.
"""

from __future__ import annotations

from infra.names import StateNames

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


def active_session_key(role: str, exam: str | None, sub: str) -> str:
    """The one open session of a person, which a second login replaces."""
    return f"examday:active-session:{role}:{exam or '-'}:{sub}"


# Login budgets (actors.accounts.sessions). `source` is a source group (an IPv4 address or
# an IPv6 /64) and always comes last, since IPv6 groups hold ':'; a scope is an exam or
# "-staff-", a pair a candidate id or a staff username (neither may hold ':').


def login_failures_ip_key(source: str) -> str:
    return f"examday:login-fail:ip:{source}"


def login_failures_exam_key(scope: str) -> str:
    return f"examday:login-fail:exam:{scope}"


def login_failures_scope_source_key(scope: str, source: str) -> str:
    return f"examday:login-fail:scope-src:{scope}:{source}"


def login_failures_pair_key(pair: str) -> str:
    return f"examday:login-fail:pair:{pair}"


def login_failures_pair_source_key(pair: str, source: str) -> str:
    return f"examday:login-fail:pair-src:{pair}:{source}"


def login_hold_key(failures_key: str) -> str:
    """The progressive delay that a failures counter has earned (a key with a TTL).

    Under its own prefix: a username like `bob:hold` must never name bob's hold."""
    return failures_key.replace("examday:login-fail:", "examday:login-hold:", 1)


def login_known_sources_key(username: str) -> str:
    """Source groups a staff member logged in from: spared the account-wide delay."""
    return f"examday:login-known:{username}"


def staff_key(username: str) -> str:
    return f"examday:staff:{username}"


# -- the exam registry (core.exams) -----------------------------------------------

# Scan patterns: every key of every exam (the records are those of three parts), and
# the organisers' exam sets.
EXAMS = "examday:exam:*"
STAFF_EXAMS = "examday:staff:*:exams"


def exam_key(exam_id: str) -> str:
    return f"examday:exam:{exam_id}"


def exam_keys_pattern(exam_id: str) -> str:
    """Scan pattern of the keys under an exam's record (its data key among them)."""
    return f"examday:exam:{exam_id}:*"


def candidate_key(exam_id: str, cid: str) -> str:
    return f"examday:exam:{exam_id}:cand:{cid}"


def candidate_devices_key(exam_id: str, cid: str) -> str:
    """The pseudonyms of the devices that sent logs with the candidate's token: whose logs
    belong in their data copy (a device id they name could be anyone's)."""
    return f"examday:exam:{exam_id}:cand:{cid}:devices"


def exam_rooms_key(exam_id: str) -> str:
    return f"examday:exam:{exam_id}:rooms"


def room_roster_key(exam_id: str, room: str) -> str:
    return f"examday:exam:{exam_id}:room:{room}:roster"


def room_proctors_key(exam_id: str, room: str) -> str:
    return f"examday:exam:{exam_id}:room:{room}:proctors"


def consents_key(exam_id: str) -> str:
    return f"examday:exam:{exam_id}:consents"


def staff_exams_key(username: str) -> str:
    """The exams of an organiser (their own), a chief proctor or an examiner (assigned)."""
    return f"examday:staff:{username}:exams"


def exam_staff_key(exam_id: str, role: str) -> str:
    """The chief proctors or examiners assigned to an exam."""
    return f"examday:exam:{exam_id}:staff:{role}"


def staff_rooms_key(username: str) -> str:
    return f"examday:staff:{username}:rooms"


# -- shard directories (core.directory), written by the controller -----------------


def shards_key(kind: str) -> str:
    return f"examday:shards:{kind}"


def shards_version_key(kind: str) -> str:
    return f"examday:shards:{kind}:version"


def shards_pins_key(kind: str) -> str:
    return f"examday:shards:{kind}:pins"


# -- the controller (cluster.controller) ------------------------------------------

CONTROLLER_DECISIONS = "examday:controller:decisions"
CONTROLLER_HISTORY = "examday:controller:history"


# -- rooms (actors.rooms): journals, written by the room shards -------------------


def room_key(exam_id: str, room_id: str) -> str:
    """A room's name on the shard ring and in its journal's hash tag."""
    return f"{exam_id}/{room_id}"


def room_events_key(room: str) -> str:
    """A room's evidence stream: every event but heartbeats (joins, leaves, incidents,
    messages, reviews, ends, ...), never trimmed by length, so no traffic can evict it;
    it goes with the room's timeline under the retention rules."""
    return f"examday:{{{room}}}:events"


def room_presence_key(room: str) -> str:
    """A room's heartbeats: a stream capped by length, sharing one id sequence with the
    evidence stream (so the two merge into one ordered history)."""
    return f"examday:{{{room}}}:presence"


def room_owner_key(room: str) -> str:
    return f"examday:{{{room}}}:owner"


def room_owner_epoch_key(room: str) -> str:
    return f"examday:{{{room}}}:owner:epoch"


def room_snapshot_key(room: str) -> str:
    return f"examday:{{{room}}}:snapshot"


def room_event_id_key(room: str, eid: str) -> str:
    """An event id already journaled (a retried append gets the stored entry back)."""
    return f"examday:{{{room}}}:eid:{eid}"


def heartbeat_rate_key(room: str, cid: str) -> str:
    """A candidate's HTTP heartbeats in the current minute (a counter with a TTL)."""
    return f"examday:{{{room}}}:beats:{cid}"


def help_rate_key(exam_id: str, cid: str) -> str:
    """A candidate's help requests in the current minute (`infra.redis.spend`); under their
    own record's name, so that it goes with the exam's keys."""
    return f"{candidate_key(exam_id, cid)}:help"


def room_shard_rooms_key(shard: str) -> str:
    """The rooms a shard holds, which it reloads after a restart."""
    return f"examday:shard:{shard}:rooms"


# -- face checks (actors.face) ----------------------------------------------------


def face_record_key(exam_id: str, cid: str) -> str:
    return f"examday:exam:{exam_id}:face:{cid}"


def face_enrolling_key(exam_id: str, cid: str) -> str:
    """Held while one enrolment of the candidate runs, so that two cannot race."""
    return f"examday:exam:{exam_id}:face:{cid}:enrolling"


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


def face_pool_replicas_key(pool_name: str) -> str:
    return f"examday:face-pool:{pool_name}:replicas"


# -- media (actors.media) ---------------------------------------------------------

MEDIA_ROOMS = "examday:media:rooms"
# Scan patterns: every media key, and both pairing keys.
MEDIA_ALL = "examday:media:*"
MEDIA_PAIRINGS = "examday:media:pairing*"


def media_publisher_key(exam_id: str, cid: str, source: str) -> str:
    return f"examday:media:publisher:{exam_id}:{cid}:{source}"


def media_talkback_key(exam_id: str, room: str, cid: str | None) -> str:
    """The talkback slot to one candidate, or to the whole room (`*`) when `cid` is None."""
    return f"examday:media:talkback:{exam_id}:{room}:{cid or '*'}"


def media_session_key(session_id: str) -> str:
    return f"examday:media:session:{session_id}"


def media_pairing_key(digest: str) -> str:
    return f"examday:media:pairing:{digest}"


def media_pairing_of_key(exam_id: str, cid: str) -> str:
    return f"examday:media:pairing-of:{exam_id}:{cid}"


def media_load_key(shard: str) -> str:
    return f"examday:media:load:{shard}"


def media_seen_key(shard: str) -> str:
    """Set with every load report, kept `gone_after_s`: the shard was heard of lately."""
    return f"examday:media:seen:{shard}"


def recording_keys(exam_id: str, cid: str) -> tuple[str, str]:
    """A candidate's segments by start time (sorted set), and their entries (hash)."""
    base = f"examday:media:recordings:{exam_id}:{cid}"
    return base, f"{base}:entries"


# -- updates (actors.updates) -----------------------------------------------------

OPS_EVENTS = "examday:ops:events"
UPDATE_ROLLOUTS = "examday:updates:rollouts"


def update_release_key(platform: str, channel: str, version: str) -> str:
    return f"examday:updates:release:{platform}:{channel}:{version}"


def update_releases_key(platform: str, channel: str) -> str:
    return f"examday:updates:releases:{platform}:{channel}"


def update_rollout_key(platform: str, channel: str) -> str:
    return f"examday:updates:rollout:{platform}:{channel}"


def update_stable_key(platform: str, channel: str) -> str:
    return f"examday:updates:stable:{platform}:{channel}"


# -- privacy (actors.privacy) -----------------------------------------------------


def privacy_exports_key(exam_id: str) -> str:
    """An exam's export packages (export id -> record)."""
    return f"examday:exports:{exam_id}"


def privacy_holds_key(exam_id: str) -> str:
    return f"examday:holds:{exam_id}"


def privacy_held_subjects_key(exam_id: str) -> str:
    """The subjects of an exam under a legal hold (`*`: the whole exam)."""
    return f"examday:holds:{exam_id}:subjects"


def privacy_uploads_key(exam_id: str, cid: str) -> str:
    """One candidate's shared photos and whiteboards (upload id -> entry)."""
    return f"examday:uploads:{exam_id}:{cid}"


def privacy_erasures_key(exam_id: str) -> str:
    return f"examday:privacy:{exam_id}:erasures"


def privacy_retention_key(region: str) -> str:
    """The prefix of a region's retention runs and of its sweeper lock."""
    return f"examday:retention:{region}"


# -- infra's mechanisms: data keys, residency audit, the deletion-receipt chain ----


def data_key_key(exam_id: str) -> str:
    """An exam's data keys, wrapped by the master key (version -> wrapped key)."""
    return f"examday:exam:{exam_id}:dek"


DATA_KEYS = "examday:exam:*:dek"


def exam_of_data_key(key: str) -> str:
    return key.split(":")[2]


def audit_events_key(region: str) -> str:
    """Residency audit events of a region (a stream: refused writes, reads across regions)."""
    return f"examday:audit:{region}"


def audit_log_key(region: str) -> str:
    """The prefix of a region's deletion-receipt chain: its head, entry ids, lock, exam index."""
    return f"examday:auditlog:{region}"


STATE_NAMES = StateNames(
    data_key=data_key_key,
    data_keys_pattern=DATA_KEYS,
    exam_of_data_key=exam_of_data_key,
    exam_record=exam_key,
    held_subjects=privacy_held_subjects_key,
    audit_events=audit_events_key,
    audit_log=audit_log_key,
)


# -- resource bounds (issue #22, finding 5) ------------------------------------------------


def upload_attempts_key(exam_id: str, cid: str) -> str:
    """A candidate's upload attempts in the current window, refused ones included."""
    return f"examday:exam:{exam_id}:upload-attempts:{cid}"


def subject_requests_key(exam_id: str, cid: str) -> str:
    """A candidate's data-copy and deletion requests in the current window."""
    return f"examday:exam:{exam_id}:subject-requests:{cid}"


def talkback_listeners_key(exam_id: str, cid: str) -> str:
    """The WHEP session ids a candidate listens to talk-back with (id -> time taken)."""
    return f"examday:exam:{exam_id}:talkback-listeners:{cid}"


def staff_streams_key(username: str) -> str:
    """A staff member's open room event streams (stream id -> lease end, a sorted set)."""
    return f"examday:staff-streams:{username}"


def session_whep_key(sid: str) -> str:
    """The WHEP session ids a staff session opened (a set), ended with it at logout."""
    return f"examday:session-whep:{sid}"


# -- roles (issue #22, finding 4) ----------------------------------------------------------


def ended_candidates_key(exam_id: str) -> str:
    """Candidates a proctor ended and nobody readmitted yet (a hash: cid -> who, when).

    Under the exam's prefix, so that it goes with the exam's other keys."""
    return f"examday:exam:{exam_id}:ended"


# -- consents, rights and policy versions (issue #26) --------------------------------------


def exam_policies_key(exam_id: str) -> str:
    """An exam's privacy policy versions (version -> text, changes, effective date).

    Under the exam's prefix: they go with the exam's record."""
    return f"examday:exam:{exam_id}:policies"


def guardian_link_key(digest: str) -> str:
    """A one-time guardian consent link, by the SHA-256 of its token (a key with a TTL)."""
    return f"examday:guardian-link:{digest}"


def rights_requests_key(exam_id: str) -> str:
    """An exam's correction requests and complaints, with their answers (id -> record)."""
    return f"examday:exam:{exam_id}:rights-requests"


# -- review and grading (core.review), issue #26 item 5 ----------------------------------


def review_rubric_key(exam_id: str) -> str:
    """An exam's grading rubric (JSON: its criteria). Under the exam's prefix, as below."""
    return f"examday:exam:{exam_id}:review:rubric"


def review_decisions_key(exam_id: str) -> str:
    """The current review decision of each candidate (cid -> JSON, the note sealed)."""
    return f"examday:exam:{exam_id}:review:decisions"


def review_history_key(exam_id: str, cid: str) -> str:
    """Every review decision of one candidate, oldest first (a list, bounded by its writer)."""
    return f"examday:exam:{exam_id}:review:history:{cid}"


def review_scores_key(exam_id: str) -> str:
    """Examiners' score sheets (`cid/examiner` -> JSON, the comment sealed)."""
    return f"examday:exam:{exam_id}:review:scores"


# -- the pre-join media probe (api/routes/whip.py), issue #25 item 4 ----------------------


def media_probe_budget_key(exam_id: str, cid: str) -> str:
    """A candidate's probe sessions in the current window (`infra.redis.spend`)."""
    return f"examday:media:probe-budget:{exam_id}:{cid}"
