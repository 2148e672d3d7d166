"""Prometheus metrics: the gateway's own per pod, the cluster's once.

Two expositions, so that no figure is counted once per gateway replica:

- `GET /metrics` (`pod_exposition`): what this gateway process measures itself, the
  `http.server.request.duration` histogram (`http_server_request_duration_seconds`,
  labelled by method, route template and status code, never the raw path), how late
  its event loop wakes (`gateway_event_loop_lag_seconds`, `watch_loop_lag`: a
  request's duration starts only once the loop reads it, so a saturated worker shows
  here first) and the standard `process_*` / `python_*` collectors. Scraped on every
  pod (ServiceMonitor).
- `GET /metrics/cluster` (`ClusterSampler`, `render`): the whole cluster, one sample of
  the actors' own stats and Redis read on demand at scrape time. Any gateway can answer
  it and every gateway would answer the same, so it is scraped as ONE target, through
  the gateway's Service (`cluster/manifests/monitoring/`): `sum by (exam)` then adds
  each room once, whatever the replica count.

Why the cluster figures stay on the gateway rather than in the shard controller: the
controller is a Ray actor with no address Prometheus can follow (Ray restarts it on any
`room_shard` node), and everything here already exists as actor stats and Redis load
reports, so no actor needs changing; what the controller contributes (its decisions) it
counts in Redis, exported here as `examday_controller_decisions_total`.

Names follow Prometheus conventions: base units (`_seconds`, `_bytes`, ratios 0-1),
counters as counters with `_total`. Labels carry exam, room, shard, replica, region and
node ids only: never a candidate id, number, name, token or device id (counts are summed
per state). Every exported family is listed in `CLUSTER_FAMILIES` / `POD_FAMILIES`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis.asyncio import Redis

from actors.media.client import MediaRouter
from actors.privacy.state import RunState
from actors.rooms.client import RoomRouter
from core import keys
from infra.objectstore import RegionHealth
from infra.redis_persistence import persistence
from infra.settings.ops import OpsSettings
from infra.telemetry import actor_call

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

# The media shards' load report (actors/media/shard.py) as exported: report key, family
# name, how the reported value becomes the base unit.
MEDIA_FIELDS: dict[str, tuple[str, float]] = {
    "sessions": ("examday_media_shard_sessions", 1.0),
    "publishers": ("examday_media_shard_publishers", 1.0),
    "viewers": ("examday_media_shard_viewers", 1.0),
    "streams": ("examday_media_shard_streams", 1.0),
    # Reported in bits per second: bytes per second here.
    "bitrate_bps": ("examday_media_shard_forwarded_bytes_per_second", 1 / 8),
    # Reported as psutil's percent of one core: CPU seconds per second (1 = one core busy).
    "cpu_percent": ("examday_media_shard_cpu_usage_ratio", 1 / 100),
}

# Every family each exposition carries: name -> Prometheus type. The sample names a query
# may use follow from the type (`_total`; `_bucket`, `_sum`, `_count`).
CLUSTER_FAMILIES: dict[str, str] = {
    "examday_candidates": "gauge",
    "examday_candidate_cameras": "gauge",
    "examday_room_shard_rooms": "gauge",
    "examday_room_shard_candidates_joined": "gauge",
    "examday_room_shard_events_appended": "counter",
    "examday_room_shard_uptime_seconds": "gauge",
    **{name: "gauge" for name, _ in MEDIA_FIELDS.values()},
    "examday_media_shard_closing": "gauge",
    "examday_verifier_replicas": "gauge",
    "examday_verifier_queue_depth": "gauge",
    "examday_verifier_queue_limit": "gauge",
    "examday_verifier_seconds_per_frame": "gauge",
    "examday_verifier_frames": "counter",
    "examday_verifier_frames_refused": "counter",
    "examday_verifier_batch_size": "histogram",
    "examday_verifier_latency_seconds": "histogram",
    "examday_face_monitor_sample_interval_seconds": "gauge",
    "examday_face_monitor_interval_stretches": "counter",
    "examday_ingest_backlog": "gauge",
    "examday_ingest_records_written": "counter",
    "examday_ingest_shard_uptime_seconds": "gauge",
    "examday_retention_run_active": "gauge",
    "examday_retention_backlog": "gauge",
    "examday_region_store_up": "gauge",
    "examday_redis_persistence_info": "gauge",
    "examday_controller_decisions": "counter",
    "examday_scrape_error": "gauge",
}
# The parts of one cluster sample, each reported in `examday_scrape_error{part}`.
PARTS = ("rooms", "media", "retention", "controller", "redis", "stores", "verifier", "ingest")

# `http.server.request.duration` (OpenTelemetry HTTP semantic conventions): its
# Prometheus name, attribute names as labels (dots become underscores) and the
# bucket bounds the conventions advise.
HTTP_DURATION = "http_server_request_duration_seconds"
HTTP_LABELS = ("http_request_method", "http_route", "http_response_status_code")
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# How late a worker's event loop woke a timer: about the length of its iterations.
# A pod's own figure, so not `examday_` (those are the cluster's, scraped once).
LOOP_LAG = "gateway_event_loop_lag_seconds"
LOOP_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LOOP_LAG_EVERY_S = 0.5  # two wakeups a second: about 0.05 % of a core
# Requests admitted and not yet answered, and those refused for being one too many
# (`api.limits.AdmissionMiddleware`): how near the process is to shedding load.
WAITING = "gateway_requests_waiting"
REFUSED = "gateway_requests_refused"
POD_FAMILIES: dict[str, str] = {
    HTTP_DURATION: "histogram",
    LOOP_LAG: "histogram",
    WAITING: "gauge",
    REFUSED: "counter",
}


class PodMetrics:
    """What one gateway process measures itself; `/metrics` exposes it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.request_duration = Histogram(
            HTTP_DURATION,
            "Duration of HTTP server requests (OpenTelemetry http.server.request.duration)",
            HTTP_LABELS,
            buckets=HTTP_BUCKETS_S,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            LOOP_LAG,
            "How much later than asked this gateway process's event loop woke a timer",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=self.registry,
        )

        self.waiting = Gauge(
            WAITING,
            "HTTP requests this gateway process admitted that have no answer yet",
            registry=self.registry,
        )
        self.refused = Counter(
            REFUSED,
            "HTTP requests this gateway process refused (503 gateway_busy) when full,"
            " by caller: staff (past their reserved places) or others",
            ("caller",),
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_duration.labels(method, route, str(status)).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# One per process, as Prometheus' own default registry: a pod's gateway is one process.
POD_METRICS = PodMetrics()


async def watch_loop_lag(
    metrics: PodMetrics = POD_METRICS, every_s: float = LOOP_LAG_EVERY_S
) -> None:
    """Sleep `every_s` again and again, recording how much later than asked the loop woke
    (runs until cancelled: the gateway's lifespan holds it)."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(every_s)
        metrics.loop_lag.observe(max(0.0, loop.time() - asked - every_s))


@dataclass
class ClusterSample:
    room_shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (exam id, room id) -> presence state -> candidates in it
    rooms: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    # (exam id, room id) -> joined candidates with / without a camera on record
    cameras: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    verifier: dict[str, Any] = field(default_factory=dict)
    verifier_queue_limit: int | None = None
    ingest: list[dict[str, Any]] = field(default_factory=list)
    retention: dict[str, dict[str, Any]] = field(default_factory=dict)
    stores: dict[str, bool] = field(default_factory=dict)
    # (verdict, reason) of infra.redis_persistence
    redis_persistence: tuple[str, str] | None = None
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
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
    # The regional object stores' health check (None: not sampled).
    stores: Callable[[str], Awaitable[RegionHealth]] | None = None
    verifier_queue_limit: int | None = None

    async def sample(self) -> ClusterSample:
        out = ClusterSample(verifier_queue_limit=self.verifier_queue_limit)
        parts: dict[str, Awaitable[None]] = {
            "rooms": self._rooms(out),
            "media": self._media(out),
            "retention": self._retention(out),
            "controller": self._decisions(out),
            "redis": self._persistence(out),
        }
        if self.stores is not None:
            parts["stores"] = self._stores(out)
        if self.verifier is not None:
            parts["verifier"] = self._verifier(out)
        if self.ingest is not None:
            parts["ingest"] = self._ingest(out)
        out.parts = list(parts)
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
                joined: list[str] = []
                for cid, presence in view["presence"].items():
                    states[presence["state"]] = states.get(presence["state"], 0) + 1
                    if presence["state"] == "joined":
                        joined.append(cid)
                out.rooms[(exam, room)] = states
                out.cameras[(exam, room)] = await self._cameras(exam, joined)

        await asyncio.gather(
            *(count(h, k) for h, k in pairs[: self.ops.metrics_max_rooms]),
            return_exceptions=True,  # a room moving away meanwhile is counted next time
        )

    async def _cameras(self, exam: str, joined: list[str]) -> tuple[int, int]:
        """Of these joined candidates, how many have a camera WHIP session on record."""
        if not joined:
            return 0, 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in joined:
                pipe.exists(keys.media_publisher_key(exam, cid, "camera"))
            found = await pipe.execute()
        publishing = sum(1 for n in found if n)
        return publishing, len(joined) - publishing

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

    async def _stores(self, out: ClusterSample) -> None:
        assert self.stores is not None
        checks = await asyncio.gather(*(self.stores(region) for region in self.regions))
        out.stores = {health.region: health.ok for health in checks}

    async def _persistence(self, out: ClusterSample) -> None:
        kept = await persistence(self.redis)
        out.redis_persistence = (kept.verdict, kept.reason)

    async def _decisions(self, out: ClusterSample) -> None:
        raw = await self.redis.hgetall(keys.CONTROLLER_DECISIONS)
        for key, value in raw.items():
            text = key.decode() if isinstance(key, bytes) else key
            action, _, reason = text.partition(":")
            out.decisions[(action, reason)] = int(value)


def render(sample: ClusterSample) -> bytes:
    """The Prometheus text exposition of one cluster sample."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SampleCollector(sample))
    return generate_latest(registry)


class _SampleCollector:
    def __init__(self, sample: ClusterSample) -> None:
        self.sample = sample

    def collect(self) -> Iterator[Metric]:
        yield from _room_metrics(self.sample)
        yield from _media_metrics(self.sample)
        yield from _verifier_metrics(self.sample)
        yield from _ingest_metrics(self.sample)
        yield from _retention_metrics(self.sample)
        yield from _dependency_metrics(self.sample)
        decisions = _counter(
            "examday_controller_decisions_total",
            "Shard controller decisions since the cluster started, by action and reason",
            ["action", "reason"],
        )
        for (action, reason), count in sorted(self.sample.decisions.items()):
            decisions.add_metric([action, reason], count)
        yield decisions
        errors = _gauge(
            "examday_scrape_error",
            "1 when a part of the cluster did not answer this scrape, else 0",
            ["part"],
        )
        for part in self.sample.parts:
            errors.add_metric([part], 1 if part in self.sample.errors else 0)
        yield errors


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    assert CLUSTER_FAMILIES[name] == "gauge", name
    return GaugeMetricFamily(name, doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)  # named without its `_total`
    assert CLUSTER_FAMILIES[family.name] == "counter", name
    return family


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    assert CLUSTER_FAMILIES[name] == "histogram", name
    return HistogramMetricFamily(name, doc, labels=labels)


def _room_metrics(sample: ClusterSample) -> Iterator[Metric]:
    rooms = _gauge("examday_room_shard_rooms", "Rooms a room shard holds", ["shard", "node"])
    joined = _gauge(
        "examday_room_shard_candidates_joined", "Joined candidates per room shard", ["shard"]
    )
    events = _counter(
        "examday_room_shard_events_appended_total",
        "Events a room shard journaled since it started",
        ["shard"],
    )
    uptime = _gauge(
        "examday_room_shard_uptime_seconds",
        "Seconds since the room shard's process started (falls on a restart)",
        ["shard"],
    )
    for name, stats in sorted(sample.room_shards.items()):
        rooms.add_metric([name, str(stats.get("node", ""))], stats["rooms"])
        joined.add_metric([name], stats["candidates_joined"])
        events.add_metric([name], stats["events_appended"])
        uptime.add_metric([name], float(stats.get("uptime", 0.0)))
    candidates = _gauge(
        "examday_candidates",
        "Candidates per exam, room and presence state",
        ["exam", "room", "state"],
    )
    for (exam, room), states in sorted(sample.rooms.items()):
        for state, count in sorted(states.items()):
            candidates.add_metric([exam, room, state], count)
    cameras = _gauge(
        "examday_candidate_cameras",
        "Joined candidates per exam and room whose camera is publishing (a WHIP session on"
        " record) or missing",
        ["exam", "room", "state"],
    )
    for (exam, room), (publishing, missing) in sorted(sample.cameras.items()):
        cameras.add_metric([exam, room, "publishing"], publishing)
        cameras.add_metric([exam, room, "missing"], missing)
    yield from (rooms, joined, events, uptime, candidates, cameras)


def _media_metrics(sample: ClusterSample) -> Iterator[Metric]:
    families = {
        key: (_gauge(name, f"Media shard load report: {key}, in base units", ["shard"]), scale)
        for key, (name, scale) in MEDIA_FIELDS.items()
    }
    draining = _gauge("examday_media_shard_closing", "1 while a media shard drains", ["shard"])
    for name, load in sorted(sample.media.items()):
        for key, (family, scale) in families.items():
            family.add_metric([name], scale * float(load.get(key, 0)))
        draining.add_metric([name], 1 if load.get("closing") else 0)
    yield from (family for family, _ in families.values())
    yield draining


def _verifier_metrics(sample: ClusterSample) -> Iterator[Metric]:
    status = sample.verifier
    replicas = _gauge("examday_verifier_replicas", "Face verifier replicas by state", ["state"])
    if status:
        replicas.add_metric(["ready"], len(status.get("replicas", [])))
        replicas.add_metric(["starting"], len(status.get("starting", [])))
    queue = _gauge("examday_verifier_queue_depth", "Frames a verifier replica holds", ["replica"])
    limit = _gauge(
        "examday_verifier_queue_limit",
        "Frames a verifier replica may hold before it refuses more (EXAMDAY_VERIFIER__MAX_QUEUE)",
        [],
    )
    if sample.verifier_queue_limit is not None:
        limit.add_metric([], sample.verifier_queue_limit)
    per_frame = _gauge(
        "examday_verifier_seconds_per_frame",
        "Moving average of model time per frame",
        ["replica"],
    )
    frames = _counter(
        "examday_verifier_frames_total", "Frames processed since the replica started", ["replica"]
    )
    refused = _counter(
        "examday_verifier_frames_refused_total",
        "Frames refused since the replica started (its queue was full)",
        ["replica"],
    )
    batches = _histogram("examday_verifier_batch_size", "Frames per model batch", ["replica"])
    latency = _histogram(
        "examday_verifier_latency_seconds",
        "Time a verifier replica took to answer a request, from its queue to its result,"
        " per lane: join (candidates' enrolment, verification, liveness) or monitoring",
        ["replica", "lane"],
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
        # the bounds come with the counts.
        for lane, answered in sorted((load.get("latency") or {}).items()):
            latency.add_metric(
                [name, lane],
                [(str(bound), int(count)) for bound, count in answered["buckets"]],
                sum_value=float(answered["sum"]),
            )
    yield from (replicas, queue, limit, per_frame, frames, refused, batches, latency)
    yield from _monitor_metrics(status.get("monitor") or {})


def _monitor_metrics(monitor: dict[str, Any]) -> Iterator[Metric]:
    """The face monitor's pacing (`actors.face.monitor.SamplePacer`), as the pool reports it:
    under overload monitoring slows down before candidates wait, and this shows by how much."""
    interval = _gauge(
        "examday_face_monitor_sample_interval_seconds",
        "Seconds between two analysed face-monitoring samples of a candidate now: the media"
        " plane's sampling interval, longer while the verifier refuses samples",
        ["monitor"],
    )
    stretches = _counter(
        "examday_face_monitor_interval_stretches_total",
        "Times the face monitor stretched its sampling interval because the verifier refused"
        " a sample (busy), since the monitor started",
        ["monitor"],
    )
    if monitor:
        name = str(monitor.get("name", ""))
        base = float(monitor.get("base_interval_s", 0.0))
        interval.add_metric([name], max(base, float(monitor.get("sample_interval_s", 0.0))))
        stretches.add_metric([name], int(monitor.get("stretches", 0)))
    yield from (interval, stretches)


def _ingest_metrics(sample: ClusterSample) -> Iterator[Metric]:
    backlog = _gauge(
        "examday_ingest_backlog", "Log records in a shard's stream not yet flushed", ["shard"]
    )
    written = _counter(
        "examday_ingest_records_written_total",
        "Records a log ingest shard wrote to the store since it started",
        ["shard"],
    )
    uptime = _gauge(
        "examday_ingest_shard_uptime_seconds",
        "Seconds since the log ingest shard's process started (falls on a restart)",
        ["shard"],
    )
    for stats in sample.ingest:
        backlog.add_metric([str(stats["name"])], stats.get("backlog", 0))
        written.add_metric([str(stats["name"])], stats.get("written", 0))
        uptime.add_metric([str(stats["name"])], float(stats.get("uptime", 0.0)))
    yield from (backlog, written, uptime)


def _retention_metrics(sample: ClusterSample) -> Iterator[Metric]:
    active = _gauge(
        "examday_retention_run_active", "1 while a retention run is unfinished", ["region"]
    )
    backlog = _gauge(
        "examday_retention_backlog",
        "Objects planned for deletion and not yet deleted",
        ["region"],
    )
    for region, progress in sorted(sample.retention.items()):
        active.add_metric([region], 0 if progress.get("run") is None else 1)
        planned = int(progress.get("planned", 0) or 0)
        backlog.add_metric([region], max(planned - int(progress.get("deleted", 0) or 0), 0))
    yield from (active, backlog)


def _dependency_metrics(sample: ClusterSample) -> Iterator[Metric]:
    stores = _gauge(
        "examday_region_store_up",
        "1 when the region's object store answered a bucket check, else 0",
        ["region"],
    )
    for region, ok in sorted(sample.stores.items()):
        stores.add_metric([region], 1 if ok else 0)
    kept = _gauge(
        "examday_redis_persistence_info",
        "1, labelled with the verdict on Redis persistence (ok, degraded, unknown) and why",
        ["verdict", "reason"],
    )
    if sample.redis_persistence is not None:
        kept.add_metric(list(sample.redis_persistence), 1)
    yield from (stores, kept)
