"""Redis keys of log ingestion, in one place (the gateway, the actors and the gate read them)."""

from __future__ import annotations

SHARD_KIND = "ingest"
GROUP = "flush"
STREAMS = "examday:ingest:streams"
DIMS = "examday:ingest:dims"
CRASHES = "examday:ingest:crashes"
ANONYMOUS = "_anonymous"
ANALYTICS_TTL_SECONDS = 400 * 86400


def shard_name(index: int) -> str:
    return f"log-ingest-{index}"


def stream_key(shard: str) -> str:
    return f"examday:ingest:{shard}:stream"


def marks_key(stream: str) -> str:
    """Which plan each stream entry belongs to, while that plan is being flushed."""
    return f"{stream}:plans"


def plan_key(plan_id: str) -> str:
    return f"examday:ingest:plan:{plan_id}"


def seen_key(shard: str, bucket: int) -> str:
    return f"examday:ingest:{shard}:seen:{bucket}"


def rate_key(device: str) -> str:
    return f"examday:ingest:rate:{device}"


def dim(platform: str, version: str, model: str = "*") -> str:
    """An aggregate dimension: platform|app version|device model ('*' = all models)."""
    return f"{platform}|{version}|{model}"


def sessions_key(dimension: str) -> str:
    return f"examday:ingest:sessions:{dimension}"


def crashed_key(dimension: str) -> str:
    return f"examday:ingest:crashed:{dimension}"


def analytics_key(day: str) -> str:
    return f"examday:analytics:{day}"


def support_key(scope: str, by: str, value: str) -> str:
    """Recent records of one pseudonymised device (by='d') or session (by='s') in a scope."""
    return f"examday:ingest:support:{scope}:{by}:{value}"
