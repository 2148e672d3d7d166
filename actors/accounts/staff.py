"""Staff accounts (proctors, organisers, admins, release managers) with argon2id password hashes.

Each record keeps who created it (`created_by`, none for the operator's `examday staff add`),
so that an account with power can be traced to the admin who made it.
"""

from __future__ import annotations

import asyncio
import json

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis

from core import keys
from infra.errors import Conflict
from infra.tokens import StaffRole

# Verifying against this when the user does not exist keeps the timing of a
# wrong username and a wrong password alike.
_HASHER = PasswordHasher()
_DUMMY_HASH = _HASHER.hash("examday-no-such-user")


class StaffRegistry:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(
        self, username: str, password: str, role: StaffRole, created_by: str | None
    ) -> None:
        hashed = await asyncio.to_thread(_HASHER.hash, password)
        record = json.dumps({"role": role, "hash": hashed, "created_by": created_by})
        if not await self.redis.set(keys.staff_key(username), record, nx=True):
            raise Conflict("that username is taken", reason="username_taken")

    async def role(self, username: str) -> str | None:
        raw = await self.redis.get(keys.staff_key(username))
        return str(json.loads(raw)["role"]) if raw else None

    async def authenticate(self, username: str, password: str) -> str | None:
        """The role of a staff member whose password matches, else None."""
        raw = await self.redis.get(keys.staff_key(username))
        record = json.loads(raw) if raw else {"hash": _DUMMY_HASH, "role": None}
        try:
            await asyncio.to_thread(_HASHER.verify, str(record["hash"]), password)
        except (VerificationError, InvalidHashError):
            return None
        return record["role"] if raw else None
