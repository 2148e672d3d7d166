"""Gateway side of log ingestion: decode a batch, pseudonymise its device, hand it to its shard.

Shards are `LogIngest` actors named `log-ingest-{i}`, listed in the shard
directory of kind `ingest`; a device's batches go to the shard rendezvous
hashing gives its pseudonym, so one device's rate budget and de-duplication
live in one place. The gateway creates the actors when it starts (and again
after one is gone).
"""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from actors.ingest.append import IngestBatch
from actors.ingest.batch import coding_of, media_kind, pack, route_device
from actors.ingest.shard import LogIngest
from core import hashing, keys
from core.directory import ShardDirectory
from infra.actor_calls import ActorCalls, Retries
from infra.errors import NotFound
from infra.pseudonym import Pseudonyms
from infra.redis import text
from infra.regional import RegionalStore
from infra.settings import Settings

_RETRIES = Retries(attempts=6, reason="ingest_unavailable", detail="log ingestion is restarting")
# Objects one support query reads at most (narrow the time range to see further).
_SUPPORT_OBJECTS = 50

# Devices remembered per candidate (a phone, a laptop, a reinstall or two).
_DEVICES_PER_CANDIDATE = 16


@dataclass(frozen=True)
class Origin:
    """Who sent a batch: an exam (and so a region) when a candidate's token came with it."""

    region: str
    exam: str | None = None
    token: str | None = None
    name: str | None = None
    numbers: tuple[str, ...] = field(default_factory=tuple)
    candidate: str | None = None  # the opaque id of the candidate whose token came with it


class IngestClient:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.directory = ShardDirectory(redis, keys.INGEST_SHARD_KIND)
        self.pseudonyms = Pseudonyms(settings.pseudonym_key)
        self.shards = ActorCalls(
            settings.ray_namespace, _RETRIES, LogIngest, rerouted=self.directory.forget_cache
        )
        self._lock = asyncio.Lock()
        self._ensured = False

    async def ensure_shards(self) -> None:
        if self._ensured:
            return
        async with self._lock:
            if self._ensured:
                return
            members = await self.directory.members()
            for index in range(self.settings.ingest.shards):
                name = keys.ingest_shard_name(index)
                await asyncio.to_thread(self.shards.create, name, self.settings, name)
                if name not in members:
                    await self.directory.add(name, {})
            self._ensured = True

    async def _call(self, name: str, method: str, *args: Any) -> Any:
        """Call one shard, waiting out a restart (bounded)."""
        return await self.shards.call(name, method, *args)

    async def shard_stats(self, name: str) -> dict[str, Any]:
        """Shard `name`'s counters: its stream's backlog, appends, flushes."""
        stats: dict[str, Any] = await self._call(name, "stats")
        return stats

    async def submit(
        self, body: bytes, content_type: str, encoding: str, origin: Origin
    ) -> dict[str, Any]:
        """Append a batch; the answer means every record is in a stream (or a 4xx, nothing is)."""
        kind = media_kind(content_type)
        coding = coding_of(encoding)
        limit = self.settings.ingest.max_batch_bytes
        device_id, (data, packed) = await asyncio.to_thread(self._route, body, coding, limit)
        batch = IngestBatch(
            data,
            kind,
            origin.region,
            origin.exam,
            coding=packed,
            secrets={"token": origin.token, "name": origin.name, "numbers": origin.numbers},
        )
        await self.ensure_shards()
        # Ingest shards are never pinned: the hash ring alone decides (no Redis round trip).
        route = self.pseudonyms.device(device_id)
        owner = hashing.owner(route, await self.directory.members())
        result: dict[str, Any] = await self._call(owner, "append", batch)
        if origin.exam is not None and origin.candidate is not None:
            await self._remember_device(origin.exam, origin.candidate, route)
        return result

    async def _remember_device(self, exam_id: str, cid: str, device: str) -> None:
        """Tie the device to the candidate whose token sent its logs, for their data copy;
        bounded (a client that invents a device id per batch fills it once and stops)."""
        devices = keys.candidate_devices_key(exam_id, cid)
        if await self.redis.sismember(devices, device):
            return
        if await self.redis.scard(devices) < _DEVICES_PER_CANDIDATE:
            await self.redis.sadd(devices, device)

    async def candidate_devices(self, exam_id: str, cid: str) -> list[str]:
        members = await self.redis.smembers(keys.candidate_devices_key(exam_id, cid))
        return sorted(text(m) for m in members)

    @staticmethod
    def _route(body: bytes, coding: str, limit: int) -> tuple[str, tuple[bytes, str]]:
        return route_device(body, coding, limit), pack(body, coding)

    async def drain(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Have every shard flush its stream to the object store (tests, operations)."""
        await self.ensure_shards()
        names = await self.directory.members()
        return list(await asyncio.gather(*(self._call(name, "drain", timeout_s) for name in names)))

    async def stats(self) -> list[dict[str, Any]]:
        await self.ensure_shards()
        names = await self.directory.members()
        return list(await asyncio.gather(*(self.shard_stats(name) for name in names)))

    async def support(
        self,
        regional: RegionalStore,
        scope: str,
        by: str,
        value: str,
        since: datetime,
        until: datetime,
        limit: int,
    ) -> list[dict[str, Any]]:
        """One pseudonymised device's (by='d') or session's (by='s') records in a scope (an exam,
        or anonymous), read back from the objects the support index names."""
        members: list[Any] = await self.redis.zrangebyscore(
            keys.ingest_support_key(scope, by, value),
            since.timestamp(),
            "+inf",
            start=0,
            num=_SUPPORT_OBJECTS,
        )
        field = "device" if by == "d" else "session"
        found: list[dict[str, Any]] = []
        for member in members:
            region, key = text(member).split("|", 1)
            try:
                body = await self._object(regional, scope, region, key)
            except NotFound:
                continue  # deleted on schedule since
            found += await asyncio.to_thread(_matching, body, field, value, since, until)
        return sorted(found, key=lambda record: float(record["time"]))[:limit]

    async def _object(self, regional: RegionalStore, scope: str, region: str, key: str) -> bytes:
        if scope != keys.ANONYMOUS:
            return await regional.get(scope, key)
        stores = regional.stores
        try:
            response = await stores.call(
                region, "get_object", Bucket=stores.bucket(region), Key=key
            )
        except stores.client(region).exceptions.NoSuchKey:
            raise NotFound("no such object", reason="object_not_found") from None
        body: bytes = await stores.run(response["Body"].read)
        return body


def _matching(
    body: bytes, field: str, value: str, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    low, high = since.timestamp(), until.timestamp()
    records = (json.loads(line) for line in gzip.decompress(body).splitlines() if line)
    return [r for r in records if r.get(field) == value and low <= float(r["time"]) <= high]
