"""Cluster metrics: one sample of the actors' own stats and Redis, as Prometheus text.

Why a gateway endpoint rather than `ray.util.metrics`: everything here already
exists as actor stats and Redis load reports, read on demand at scrape time, so
no actor needs changing and a scrape of any gateway sees the whole cluster.
Labels carry exam, room, shard, replica, region and node ids only: never a
candidate id, number, name, token or device id (counts are summed per state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from redis.asyncio import Redis

from actors.media.client import MediaRouter
from actors.privacy.state import RunState
from actors.rooms.client import RoomRouter
from core import keys
from infra.settings.ops import OpsSettings
from infra.telemetry import actor_call

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
MEDIA_FIELDS = ("sessions", "publishers", "viewers", "streams", "bitrate_bps", "cpu_percent")


@dataclass
class ClusterSample:
    room_shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (exam id, room id) -> presence state -> candidates in it
    rooms: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    verifier: dict[str, Any] = field(default_factory=dict)
    ingest: list[dict[str, Any]] = field(default_factory=list)
    retention: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class ClusterSampler:
    """Reads what the actors and Redis say; every part bounded in time, failures counted."""

    ops: OpsSettings
    redis: Redis
    rooms: RoomRouter
    media: MediaRouter
    # What the verifier pool and the ingest shards report (None: not sampled).
    verifier: Callable[[], Awaitable[dict[str, Any]]] | None
    ingest: Callable[[], Awaitable[list[dict[str, Any]]]] | None
    regions: list[str]

    async def sample(self) -> ClusterSample:
        out = ClusterSample()
        parts: dict[str, Awaitable[None]] = {
            "rooms": self._rooms(out),
            "media": self._media(out),
            "retention": self._retention(out),
            "controller": self._decisions(out),
        }
        if self.verifier is not None:
            parts["verifier"] = self._verifier(out)
        if self.ingest is not None:
            parts["ingest"] = self._ingest(out)
        results = await asyncio.gather(
            *(self._bounded(part) for part in parts.values()), return_exceptions=True
        )
        for name, result in zip(parts, results, strict=True):
            if result is not None:
                out.errors.append(name)
                log.warning("metrics: %s did not answer: %r", name, result)
        return out

    async def _bounded(self, part: Awaitable[None]) -> None:
        await asyncio.wait_for(part, self.ops.metrics_timeout_s)

    async def _rooms(self, out: ClusterSample) -> None:
        names = await self.rooms.directory.members()
        handles = [await self.rooms.handle(name) for name in names]
        # stats and owned_rooms are not traced methods: plain calls.
        stats = await asyncio.gather(*(h.stats.remote() for h in handles))
        owned = await asyncio.gather(*(h.owned_rooms.remote() for h in handles))
        out.room_shards = dict(zip(names, stats, strict=True))
        budget = asyncio.Semaphore(self.ops.metrics_concurrency)
        pairs = [(h, k) for h, rooms in zip(handles, owned, strict=True) for k in rooms]

        async def count(handle: Any, key: str) -> None:
            async with budget:
                view = await actor_call(handle.room_view, key)
            exam, _, room = key.partition("/")
            states: dict[str, int] = {}
            for presence in view["presence"].values():
                states[presence["state"]] = states.get(presence["state"], 0) + 1
            out.rooms[(exam, room)] = states

        await asyncio.gather(
            *(count(h, k) for h, k in pairs[: self.ops.metrics_max_rooms]),
            return_exceptions=True,  # a room moving away meanwhile is counted next time
        )

    async def _media(self, out: ClusterSample) -> None:
        names = await self.media.directory.members()
        out.media = await self.media.loads(names)

    async def _verifier(self, out: ClusterSample) -> None:
        assert self.verifier is not None
        out.verifier = await self.verifier()

    async def _ingest(self, out: ClusterSample) -> None:
        assert self.ingest is not None
        out.ingest = await self.ingest()

    async def _retention(self, out: ClusterSample) -> None:
        for region in self.regions:
            out.retention[region] = await RunState(self.redis, region).progress()

    async def _decisions(self, out: ClusterSample) -> None:
        raw = await self.redis.hgetall(keys.CONTROLLER_DECISIONS)
        for key, value in raw.items():
            text = key.decode() if isinstance(key, bytes) else key
            action, _, reason = text.partition(":")
            out.decisions[(action, reason)] = int(value)


def render(sample: ClusterSample) -> bytes:
    """The Prometheus text exposition of one sample."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SampleCollector(sample))
    return generate_latest(registry)


class _SampleCollector:
    def __init__(self, sample: ClusterSample) -> None:
        self.sample = sample

    def collect(self) -> Iterator[Metric]:
        yield from _room_metrics(self.sample)
        yield from _media_metrics(self.sample)
        yield from _verifier_metrics(self.sample.verifier)
        yield from _ingest_metrics(self.sample)
        yield from _retention_metrics(self.sample)
        decisions = GaugeMetricFamily(
            "examday_controller_decisions",
            "Room shard controller decisions since the cluster started, by action and reason",
            labels=["action", "reason"],
        )
        for (action, reason), count in sorted(self.sample.decisions.items()):
            decisions.add_metric([action, reason], count)
        yield decisions
        errors = GaugeMetricFamily(
            "examday_scrape_error", "1 when a part of the cluster did not answer", labels=["part"]
        )
        for part in self.sample.errors:
            errors.add_metric([part], 1)
        yield errors


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"examday_{name}", doc, labels=labels)


def _room_metrics(sample: ClusterSample) -> Iterator[Metric]:
    rooms = _gauge("room_shard_rooms", "Rooms a room shard holds", ["shard", "node"])
    joined = _gauge("room_shard_candidates_joined", "Joined candidates per shard", ["shard"])
    events = _gauge("room_shard_events_appended", "Events journaled since start", ["shard"])
    for name, stats in sorted(sample.room_shards.items()):
        rooms.add_metric([name, str(stats.get("node", ""))], stats["rooms"])
        joined.add_metric([name], stats["candidates_joined"])
        events.add_metric([name], stats["events_appended"])
    candidates = _gauge(
        "candidates", "Candidates per exam, room and presence state", ["exam", "room", "state"]
    )
    for (exam, room), states in sorted(sample.rooms.items()):
        for state, count in sorted(states.items()):
            candidates.add_metric([exam, room, state], count)
    yield from (rooms, joined, events, candidates)


def _media_metrics(sample: ClusterSample) -> Iterator[Metric]:
    families = {
        key: _gauge(f"media_shard_{key}", f"Media shard load report: {key}", ["shard"])
        for key in MEDIA_FIELDS
    }
    draining = _gauge("media_shard_closing", "1 while a media shard drains", ["shard"])
    for name, load in sorted(sample.media.items()):
        for key, family in families.items():
            family.add_metric([name], float(load.get(key, 0)))
        draining.add_metric([name], 1 if load.get("closing") else 0)
    yield from families.values()
    yield draining


def _verifier_metrics(status: dict[str, Any]) -> Iterator[Metric]:
    replicas = _gauge("verifier_replicas", "Face verifier replicas by state", ["state"])
    replicas.add_metric(["ready"], len(status.get("replicas", [])))
    replicas.add_metric(["starting"], len(status.get("starting", [])))
    queue = _gauge("verifier_queue_depth", "Frames a verifier replica holds", ["replica"])
    per_frame = _gauge(
        "verifier_seconds_per_frame", "Moving average of model time per frame", ["replica"]
    )
    frames = _gauge("verifier_frames", "Frames processed since start", ["replica"])
    refused = _gauge("verifier_refused", "Frames refused (queue full)", ["replica"])
    batches = HistogramMetricFamily(
        "examday_verifier_batch_size", "Frames per model batch", labels=["replica"]
    )
    latency = HistogramMetricFamily(
        "examday_verifier_latency_seconds",
        "Time a verifier replica took to answer a request, from its queue to its result",
        labels=["replica"],
    )
    for name, load in sorted((status.get("loads") or {}).items()):
        queue.add_metric([name], load.get("held", 0))
        per_frame.add_metric([name], load.get("seconds_per_frame", 0.0))
        frames.add_metric([name], load.get("frames", 0))
        refused.add_metric([name], load.get("refused", 0))
        sizes = {int(k): int(v) for k, v in (load.get("batch_sizes") or {}).items()}
        buckets = [(str(b), sum(n for s, n in sizes.items() if s <= b)) for b in BATCH_BUCKETS]
        buckets.append(("+Inf", sum(sizes.values())))
        batches.add_metric([name], buckets, sum_value=sum(s * n for s, n in sizes.items()))
        # The replica counts in its own buckets (actors.face.batcher.LATENCY_BUCKETS_S), so
        # the bounds come with the counts; an older replica without them is left out.
        answered = load.get("latency")
        if answered:
            latency.add_metric(
                [name],
                [(str(bound), int(count)) for bound, count in answered["buckets"]],
                sum_value=float(answered["sum"]),
            )
    yield from (replicas, queue, per_frame, frames, refused, batches, latency)


def _ingest_metrics(sample: ClusterSample) -> Iterator[Metric]:
    backlog = _gauge("ingest_backlog", "Log records in a shard's stream not yet flushed", ["shard"])
    written = _gauge("ingest_records_written", "Records written to the store", ["shard"])
    for stats in sample.ingest:
        backlog.add_metric([str(stats["name"])], stats.get("backlog", 0))
        written.add_metric([str(stats["name"])], stats.get("written", 0))
    yield from (backlog, written)


def _retention_metrics(sample: ClusterSample) -> Iterator[Metric]:
    active = _gauge("retention_run_active", "1 while a retention run is unfinished", ["region"])
    backlog = _gauge(
        "retention_backlog", "Objects planned for deletion and not yet deleted", ["region"]
    )
    for region, progress in sorted(sample.retention.items()):
        active.add_metric([region], 0 if progress.get("run") is None else 1)
        planned = int(progress.get("planned", 0) or 0)
        backlog.add_metric([region], max(planned - int(progress.get("deleted", 0) or 0), 0))
    yield from (active, backlog)
