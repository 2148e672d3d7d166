"""What a gateway process holds while it runs: connections and registries, never request state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from actors import health
from actors.accounts.sessions import Sessions
from actors.accounts.staff import StaffRegistry
from actors.face.service import FaceService
from actors.ingest.client import IngestClient
from actors.media.client import MediaPlane
from actors.privacy.service import PrivacyService
from actors.rooms.client import RoomRouter
from actors.updates.client import UpdateClient
from core.exams import ExamRegistry
from core.process_services import ProcessServices, open_process
from infra import raycluster
from infra.keyring import RotatingDataKeys
from infra.objectstore import ObjectStores
from infra.regional import RegionalStore
from infra.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    # What every process opens the same way; the fields below name its parts.
    process: ProcessServices
    redis: Redis
    stores: ObjectStores
    health_probe: Any
    keys: RotatingDataKeys
    exams: ExamRegistry
    staff: StaffRegistry
    sessions: Sessions
    rooms: RoomRouter
    regional: RegionalStore
    media: MediaPlane
    # Face verification: the verifier pool and the face monitor, made at start-up.
    face: FaceService = field(init=False)
    # Client logs (LogIngest shards) and update manifests.
    ingest: IngestClient = field(init=False)
    updates: UpdateClient = field(init=False)
    # Uploads, legal holds, exports, consents and retention runs (one actor per region).
    privacy: PrivacyService = field(init=False)

    @classmethod
    async def open(cls, settings: Settings) -> Runtime:
        await asyncio.to_thread(raycluster.connect, settings)
        probe = await asyncio.to_thread(health.get_or_create, settings)
        process = open_process(settings, "gateway")
        redis, keys = process.redis, process.keys
        runtime = cls(
            settings=settings,
            process=process,
            redis=redis,
            stores=process.stores,
            health_probe=probe,
            keys=keys,
            exams=ExamRegistry(settings, redis, keys),
            staff=StaffRegistry(redis),
            sessions=Sessions(settings, redis),
            rooms=RoomRouter(settings, redis),
            regional=process.regional,
            media=MediaPlane.open(settings, redis),
        )
        await runtime.rooms.ensure_shards()
        # Started now, not by the first candidate: on exam morning that is the login
        # storm, when an actor's start-up (and its first Redis connections) would time out.
        runtime.ingest = IngestClient(settings, redis)
        await runtime.ingest.ensure_shards()
        runtime.updates = UpdateClient(settings)
        await runtime.updates.start()
        runtime.face = await FaceService.open(settings, redis, runtime.regional, runtime.rooms)
        await runtime.media.router.ensure_shards()
        runtime.privacy = PrivacyService(settings, redis, runtime.regional, runtime.exams)
        await runtime.privacy.start()
        return runtime

    async def close(self) -> None:
        await self.process.close()
