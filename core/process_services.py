"""One way to wire a process: tracing, CPU priority, Redis, object stores, data keys.

In core rather than infra because it hands infra's mechanisms their Redis names
(`core.keys.STATE_NAMES`), which only core may spell.

The gateway, every actor and the commands that touch personal data each need
some of the same few services. Wired by hand in each place they drifted: the
media shards, the face monitor and log ingest built a data-key ring that knew
only the current master key, so after a master-key rotation they could not
open the data keys of exams created before it until `examday keys rotate` had
run, while the gateway and retention could. `open_process` is the only place
those services are built, so every process opens data keys the same,
rotation-aware way (`infra.keyring.RotatingDataKeys`).

Tracing and priority take effect at once (an actor's threads and first log
lines need them from its start); Redis, the object stores, the data keys and
the regional store are made on first use, so a process that never touches the
stores (a room shard, the health probe) holds no S3 clients or threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from core import keys
from infra import redis as redis_conn
from infra.keyring import RotatingDataKeys
from infra.objectstore import ObjectStores
from infra.priority import Priority, adopt_priority
from infra.regional import RegionalStore
from infra.settings import Settings
from infra.telemetry import setup_tracing


@dataclass(eq=False)
class ProcessServices:
    """The shared services of one process; build it with `open_process`."""

    settings: Settings
    # None for a command-line tool or a bench: it records no spans and keeps the
    # host's logging, as it did before any of this existed.
    component: str | None
    tracer_provider: TracerProvider | None
    _redis: Redis | None = field(default=None, init=False, repr=False)
    _stores: ObjectStores | None = field(default=None, init=False, repr=False)
    _keys: RotatingDataKeys | None = field(default=None, init=False, repr=False)
    _regional: RegionalStore | None = field(default=None, init=False, repr=False)

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = redis_conn.connect(self.settings)
        return self._redis

    @property
    def stores(self) -> ObjectStores:
        if self._stores is None:
            self._stores = ObjectStores(self.settings)
        return self._stores

    @property
    def keys(self) -> RotatingDataKeys:
        """The process's one data-key ring: it opens data keys wrapped by the current
        master key or by any key in `data_master_keys_previous`."""
        if self._keys is None:
            self._keys = RotatingDataKeys.from_settings(self.redis, self.settings, keys.STATE_NAMES)
        return self._keys

    @property
    def regional(self) -> RegionalStore:
        if self._regional is None:
            self._regional = RegionalStore(self.stores, self.keys, self.redis)
        return self._regional

    async def close(self) -> None:
        """Close what was opened; the tracer provider stays, it belongs to the process."""
        redis, self._redis = self._redis, None
        stores, self._stores = self._stores, None
        self._keys = self._regional = None
        if redis is not None:
            await redis.aclose()
        if stores is not None:
            stores.close()


def open_process(
    settings: Settings, component: str | None, *, priority: Priority | None = None
) -> ProcessServices:
    """The services of this process, with its tracing (as `component`) and, when given,
    its `priority` in place before anything else runs.

    `priority=None` leaves the niceness as it is: the gateway and command-line tools
    run as started."""
    provider = setup_tracing(settings, component) if component is not None else None
    if priority is not None:
        adopt_priority(priority)
    return ProcessServices(settings, component, provider)
