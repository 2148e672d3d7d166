"""The gateway's event loop: uvloop, taking in every waiting connection at each wakeup.

uvloop's libuv accepts one connection per wakeup of the listening socket (libuv
PR 3696: "don't accept() connections in a loop"), so a worker whose loop
iterations take 0.3-1.3 s, as a saturated gateway's did, takes in a few new
connections a second and the rest wait in the kernel's listen queue. On exam day that is the
departure wave: each candidate's client logs go out on a fresh connection (the
presence socket carried everything for the stay) and waited 15-50 s in a queue
of up to 950, while the same requests on kept-alive connections took 4-13 s.

So the listening socket is not handed to libuv: a reader on it accepts every
waiting connection (at most `backlog` a wakeup, as asyncio's own loop does) and
gives each to uvloop as an accepted socket, which then runs it like any other.
uvicorn starts it with `--loop api.event_loop:new_event_loop`
(`EXAMDAY_GATEWAY_LOOP=uvloop`, the default; `asyncio` runs asyncio's loop).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvloop

log = logging.getLogger("examday.gateway")

# asyncio's answer to running out of descriptors or buffers: stop accepting a while.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_RETRY_S = 1.0


class Listener(asyncio.AbstractServer):
    """One listening socket, read by the loop's reader, every waiting connection taken."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        backlog: int,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = protocol_factory
        self._backlog = max(1, backlog)
        self._serving = False
        self._starting: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        # uvicorn's supervisor binds the socket its workers share; each starts listening.
        sock.listen(self._backlog)
        sock.setblocking(False)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed.is_set() else (self._sock,)

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving or self._closed.is_set():
            return
        self._loop.add_reader(self._sock.fileno(), self._accept)
        self._serving = True

    async def serve_forever(self) -> None:
        await self.start_serving()
        await self._closed.wait()

    def close(self) -> None:
        if self._closed.is_set():
            return
        if self._serving:
            self._loop.remove_reader(self._sock.fileno())
            self._serving = False
        self._sock.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _accept(self) -> None:
        for _ in range(self._backlog):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                log.warning("accept paused for %.0f s: %s", _ACCEPT_RETRY_S, exc.strerror)
                self._loop.remove_reader(self._sock.fileno())
                self._serving = False
                self._loop.call_later(_ACCEPT_RETRY_S, self._resume)
                return
            self._start(conn)

    def _resume(self) -> None:
        if not self._closed.is_set() and not self._serving:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._serving = True

    def _start(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
        self._starting.add(task)
        task.add_done_callback(lambda done: self._started(done, conn))

    def _started(self, task: asyncio.Task[Any], conn: socket.socket) -> None:
        self._starting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            conn.close()  # the peer is gone already (reset before we got to it)


class GatewayLoop(uvloop.Loop):
    """uvloop, but its TCP servers are `Listener`s (see the module's docstring)."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        **kwargs: Any,
    ) -> asyncio.AbstractServer:
        if sock is None:
            sock = socket.create_server((host or "", port or 0), backlog=backlog)
        if ssl is not None:  # TLS ends at the ingress (deploy/); uvloop's own server serves it
            return await super().create_server(
                protocol_factory, sock=sock, backlog=backlog, ssl=ssl, **kwargs
            )
        server = Listener(self, sock, protocol_factory, backlog)
        if kwargs.get("start_serving", True):
            await server.start_serving()
        return server


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's `--loop` factory for the gateway."""
    return GatewayLoop()
