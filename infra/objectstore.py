"""S3 clients, one per region, and the buckets behind them.

boto3 is synchronous: every call from async code runs on the stores' own threads
(`object_store_threads`), so that the event loop never waits on the network and
S3's waits never fill the default executor, which Ray handle lookups and CPU work
off the loop share: a wave of photo uploads could hold all of its threads (six on
two cores) while log uploads and handle lookups waited behind them. Personal data
reaches these buckets only through the regional store built on top of this module,
which always names the exam's region.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from infra.errors import DependencyDown, NotFound
from infra.settings import RegionStore, Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")


def make_client(store: RegionStore, connections: int = 32) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=store.access_key.get_secret_value(),
        aws_secret_access_key=store.secret_key.get_secret_value(),
        region_name=store.signing_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=2,
            read_timeout=30,
            max_pool_connections=connections,
        ),
    )


@dataclass(frozen=True)
class RegionHealth:
    region: str
    ok: bool
    detail: str


class ObjectStores:
    """The per-region S3 clients of one process."""

    def __init__(self, settings: Settings) -> None:
        # Kept for what writes into these buckets under the process's own policy (the
        # audit log's signing key and Object Lock period), so callers need not pass them.
        self.settings = settings
        self._stores = dict(settings.regions)
        threads = settings.object_store_threads
        self._clients = {
            region: make_client(store, max(32, threads)) for region, store in self._stores.items()
        }
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="object-store")

    @property
    def regions(self) -> list[str]:
        return list(self._stores)

    def close(self) -> None:
        """Let the stores' threads end once their calls in flight have; no new calls."""
        self._threads.shutdown(wait=False)

    def bucket(self, region: str) -> str:
        return self._store(region).bucket

    def client(self, region: str) -> S3Client:
        self._store(region)
        return self._clients[region]

    def _store(self, region: str) -> RegionStore:
        try:
            return self._stores[region]
        except KeyError:
            raise NotFound(f"unknown region {region!r}", reason="unknown_region") from None

    def ensure_buckets(self) -> None:
        """Create each region's bucket with Object Lock (and so versioning) if missing."""
        for region in self._stores:
            client, bucket = self._clients[region], self.bucket(region)
            try:
                client.head_bucket(Bucket=bucket)
            except ClientError:
                # Object Lock can only be switched on at creation; legal holds need it.
                client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )

    async def check(self, region: str) -> RegionHealth:
        def probe() -> None:
            self._clients[region].head_bucket(Bucket=self.bucket(region))

        try:
            await asyncio.wait_for(self.run(probe), timeout=3)
        except (ClientError, BotoCoreError, TimeoutError, OSError) as exc:
            return RegionHealth(region, False, type(exc).__name__)
        return RegionHealth(region, True, "ok")

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`function(*args, **kwargs)`, blocking boto3 work (a call, a body's read), on the
        stores' threads, in the caller's context (its trace) as `asyncio.to_thread` would."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def call(self, region: str, operation: str, **params: Any) -> Any:
        """Run one S3 operation off the event loop; store outages become DependencyDown."""
        method = getattr(self.client(region), operation)
        try:
            return await self.run(method, **params)
        except BotoCoreError as exc:
            raise DependencyDown(
                f"object store of {region} unreachable", reason="object_store_down"
            ) from exc
