"""Detached, named Ray actors of one class: created once cluster-wide, handles cached per process.

Room shards, media shards and ingest shards are all found this way; a handle
of an actor that died is forgotten, and the next lookup asks Ray again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray


class NamedActors:
    def __init__(self, actor_class: Any, namespace: str) -> None:
        self._class = actor_class
        self._namespace = namespace
        self._handles: dict[str, Any] = {}

    def create(self, name: str, *args: Any) -> Any:
        """The actor called `name`, started with `args` if it does not exist yet (blocking)."""
        handle = self._class.options(
            name=name, namespace=self._namespace, get_if_exists=True, lifetime="detached"
        ).remote(*args)
        self._handles[name] = handle
        return handle

    async def get(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = await asyncio.to_thread(ray.get_actor, name, namespace=self._namespace)
            self._handles[name] = handle
        return handle

    def forget(self, name: str) -> None:
        self._handles.pop(name, None)
