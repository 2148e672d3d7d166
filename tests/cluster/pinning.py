"""Controller bounds for tests: each plane held at a given number of shards."""

from __future__ import annotations

from typing import Any

from api.runtime import Runtime
from core.directory import ShardDirectory
from infra.settings.ops import OpsSettings


async def members_now(directory: ShardDirectory) -> list[str]:
    """The directory as it is now. The gateway's copy may answer from a cache up to half
    a second old (by design, `core.directory`), and controllers and drains change it
    over their own connections: a test that reads it just after one of them acted
    would otherwise see the shard set from before (seen in CI, `test_drain`)."""
    directory.forget_cache()
    return await directory.members()


async def pinned(
    runtime: Runtime,
    rooms: int | None = None,
    media: int | None = None,
    ingest: int | None = None,
    **more: Any,
) -> OpsSettings:
    """Bounds that hold each plane at `rooms` / `media` / `ingest` shards (default: as
    many as now)."""
    await runtime.ingest.ensure_shards()  # made on first use, else
    rooms = rooms or len(await members_now(runtime.rooms.directory))
    media = media or len(await members_now(runtime.media.router.directory))
    ingest = ingest or len(await members_now(runtime.ingest.directory))
    return OpsSettings(
        controller_min_shards=rooms,
        controller_max_shards=rooms,
        controller_media_min_shards=media,
        controller_media_max_shards=media,
        controller_ingest_min_shards=ingest,
        controller_ingest_max_shards=ingest,
        controller_cooldown_s=0,
        **more,
    )


def plane(decisions: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The decision about plane `name` among one step's decisions."""
    [decision] = [d for d in decisions if d["plane"] == name]
    return decision
