"""Installers in the object store: presigned upload, verification against the declared
size and sha256, presigned download.

Installers carry no personal data, but their bucket is still chosen by naming
a region (`EXAMDAY_UPDATES__INSTALLER_REGION`). An installer that does not
match its declaration is deleted, every version of it, so nothing stays.

    _releases/{platform}/{channel}/{version}/{filename}
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from botocore.exceptions import ClientError

from infra.errors import Conflict, InvalidInput
from infra.objectstore import ObjectStores

_CHUNK = 1024 * 1024
_MAX_VERSION_PAGES = 100


def installer_key(platform: str, channel: str, version: str, filename: str) -> str:
    return f"_releases/{platform}/{channel}/{version}/{filename}"


class InstallerStore:
    def __init__(self, stores: ObjectStores, region: str) -> None:
        self.stores = stores
        self.region = region
        self.bucket = stores.bucket(region)

    async def _presign(self, operation: str, key: str, expires: int) -> str:
        client = self.stores.client(self.region)
        url: str = await asyncio.to_thread(
            client.generate_presigned_url,
            operation,
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires,
        )
        return url

    async def upload_url(self, key: str, expires: int) -> str:
        return await self._presign("put_object", key, expires)

    async def download_url(self, key: str, expires: int) -> str:
        return await self._presign("get_object", key, expires)

    async def verify(self, key: str, size: int, sha256: str) -> None:
        """Accept the uploaded installer, or delete it and say why."""
        try:
            head = await self.stores.call(self.region, "head_object", Bucket=self.bucket, Key=key)
        except ClientError:
            raise Conflict(
                "upload the installer to the upload URL first", reason="installer_missing"
            ) from None
        if int(head["ContentLength"]) != size:
            await self.delete(key)
            raise InvalidInput(
                f"the installer is {head['ContentLength']} bytes, {size} were declared; "
                "it was deleted",
                reason="installer_size_mismatch",
            )
        digest = await self._sha256(key)
        if digest != sha256:
            await self.delete(key)
            raise InvalidInput(
                "the installer's sha256 is not the declared one; it was deleted",
                reason="installer_sha256_mismatch",
            )

    async def _sha256(self, key: str) -> str:
        response = await self.stores.call(self.region, "get_object", Bucket=self.bucket, Key=key)

        def digest(body: Any) -> str:
            hasher = hashlib.sha256()
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                hasher.update(chunk)
            body.close()
            return hasher.hexdigest()

        return await asyncio.to_thread(digest, response["Body"])

    async def delete(self, key: str) -> int:
        """Delete every version and delete marker of `key`; returns how many went."""
        deleted = 0
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": key}
        for _ in range(_MAX_VERSION_PAGES):
            page = await self.stores.call(self.region, "list_object_versions", **params)
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if item["Key"] != key:
                    continue
                await self.stores.call(
                    self.region,
                    "delete_object",
                    Bucket=self.bucket,
                    Key=key,
                    VersionId=item["VersionId"],
                )
                deleted += 1
            if not page.get("IsTruncated"):
                break
            params["KeyMarker"] = page.get("NextKeyMarker")
            params["VersionIdMarker"] = page.get("NextVersionIdMarker")
        return deleted

    async def exists(self, key: str) -> bool:
        page = await self.stores.call(
            self.region, "list_object_versions", Bucket=self.bucket, Prefix=key
        )
        items = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        return any(item["Key"] == key for item in items)
