"""One UDP port per media shard (ICE mux): every peer connection of the shard on one socket.

aioice gives each ICE connection a socket of its own per host address (an
ephemeral port each); a shard serving hundreds of sessions then holds
hundreds of sockets and announces as many ports. Here, as in LiveKit's
single-port mode and mediasoup's `WebRtcServer`, one `UdpMux` owns one socket
(one per host address) and routes what it receives:

- a STUN Binding request by its USERNAME attribute ("localufrag:remoteufrag"):
  the local ICE username fragment names the connection; once its
  MESSAGE-INTEGRITY checks out with that connection's password, the source
  address is learned for it (at most `MAX_ADDRESSES` per connection; an
  address learned by another connection moves);
- a STUN response by the transaction of the request it answers (a check
  the shard sent before the peer's first request reached it);
- everything else (DTLS, SRTP, SRTCP, STUN indications) by source address,
  straight to the connection's `data_received` (aioice's own protocol first
  tries each datagram as STUN, an exception per media packet).

What matches nothing is dropped and counted (`counts`), and so is an empty
datagram (aiortc's DTLS transport reads the first byte of what it is given,
and ends on an empty one). A connection whose ufrag another live connection
of the mux already has gets a new one before its answer is written; one whose ICE
restarts (`actors.media.aiortc.ice_restart`) is routed by its new one (`rekey`). Each aioice
`Connection` gets a `MuxedStunProtocol`, an aioice `StunProtocol` whose
transport sends through the shared socket; `actors.media.aiortc.rtc` makes
gathering attach one (see `rtc.install`). Closing the connection closes its
protocol, which removes every route to it.

Reading: with `batch_reads` the socket is read by one `add_reader` callback
that drains it (`recvfrom` until EAGAIN, at most `MAX_BATCH`) and writes go
straight to `sendto` (a datagram the kernel cannot take is dropped, as the
network would); without, through an asyncio datagram transport, one
`datagram_received` call per datagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import socket
import string
from collections import Counter
from collections.abc import Callable
from typing import Any, Final, cast

from aioice import stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol

from actors.media.aiortc.private_api import PRIVATE_API

logger = logging.getLogger(__name__)

Address = tuple[str, int]

STUN_COOKIE: Final = b"\x21\x12\xa4\x42"
MAX_ADDRESSES: Final = 8  # remote addresses one connection may have routed to it
MAX_BATCH: Final = 64  # datagrams read in one wakeup (`batch_reads`)
RECEIVE_BUFFER: Final = 4 * 1024 * 1024  # the socket's SO_RCVBUF: every session's media
MAX_DATAGRAM: Final = 65535
UFRAG_CHARS: Final = string.ascii_letters + string.digits


class MuxedTransport:
    """What a `MuxedStunProtocol` has for a transport: the shared socket, and its own end."""

    def __init__(self, mux: UdpMux, protocol: MuxedStunProtocol) -> None:
        self._mux = mux
        self._protocol = protocol
        self.sendto: Callable[[bytes, Address], None] = mux.sendto
        self._closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return (self._mux.announced, self._mux.port)
        return default

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._mux.detach(self._protocol)
        self._protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self._closed


class MuxedStunProtocol(StunProtocol):
    """One aioice connection's end of a `UdpMux`: sends through it, gets what it routes here."""

    def __init__(self, connection: Connection, mux: UdpMux, component: int) -> None:
        super().__init__(connection)
        self.mux = mux
        self.component = component
        self.addresses: dict[Address, None] = {}  # learned, oldest first
        # Non-STUN datagrams go straight to the connection, as aioice's protocol sends them.
        self.deliver: Callable[[bytes, int], None] = getattr(connection, PRIVATE_API["ice_data_in"])
        self.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", mux.announced),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=mux.announced,
            port=mux.port,
            type="host",
        )
        self.connection_made(cast(asyncio.DatagramTransport, MuxedTransport(mux, self)))

    async def request(
        self,
        request: stun.Message,
        addr: Address,
        integrity_key: bytes | None = None,
        retransmissions: int | None = None,
    ) -> tuple[stun.Message, Address]:
        # Its response is routed by transaction: it may come before the peer's first request.
        self.mux.expect(request.transaction_id, self)
        try:
            return await super().request(request, addr, integrity_key, retransmissions)
        finally:
            self.mux.expected(request.transaction_id)


class UdpMux:
    """One socket shared by many ICE connections; `attach` gives a connection its end."""

    def __init__(self, sock: socket.socket, announced: str, *, batch_reads: bool) -> None:
        self.sock = sock
        self.bound: str = sock.getsockname()[0]
        self.port: int = sock.getsockname()[1]
        self.announced = announced
        self.batch_reads = batch_reads
        self.counts: Counter[str] = Counter()
        self._by_ufrag: dict[str, MuxedStunProtocol] = {}
        self._by_address: dict[Address, MuxedStunProtocol] = {}
        self._by_transaction: dict[bytes, MuxedStunProtocol] = {}
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self.sendto: Callable[[bytes, Address], None] = self._send_direct
        self._closed = False

    @classmethod
    async def open(
        cls,
        bind: str,
        *,
        port: int,
        span: int = 1,
        announced: str | None = None,
        batch_reads: bool = True,
    ) -> UdpMux:
        """A mux on the first port of `port`..`port + span - 1` free on `bind`."""
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        last: OSError | None = None
        for candidate in range(port, port + span):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((bind, candidate))
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                last = exc
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            mux = cls(sock, announced or bind, batch_reads=batch_reads)
            await mux._start()
            return mux
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {port}..{port + span - 1}") from last

    async def _start(self) -> None:
        if self.batch_reads:
            self._loop.add_reader(self.sock.fileno(), self._read_all)
            return
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Endpoint(self), sock=self.sock
        )
        self._transport = transport
        self.sendto = transport.sendto

    # -- connections ---------------------------------------------------------

    def attach(self, connection: Connection, component: int) -> MuxedStunProtocol:
        """`connection`'s end of this mux: its host candidate is (announced, port)."""
        if self._closed:
            raise ConnectionError("the UDP mux is closed")
        ufrag = connection.local_username
        while ufrag in self._by_ufrag:  # another live connection drew the same fragment
            ufrag = "".join(secrets.choice(UFRAG_CHARS) for _ in range(8))
            setattr(connection, PRIVATE_API["ice_local_username"], ufrag)
        protocol = MuxedStunProtocol(connection, self, component)
        self._by_ufrag[ufrag] = protocol
        return protocol

    def holds(self, ufrag: str) -> bool:
        """Whether a live connection of this mux has the ICE username fragment `ufrag`."""
        return ufrag in self._by_ufrag

    def rekey(self, protocol: MuxedStunProtocol) -> None:
        """Route by `protocol`'s connection's new ufrag (an ICE restart), not its old one."""
        for ufrag in [u for u, p in self._by_ufrag.items() if p is protocol]:
            del self._by_ufrag[ufrag]
        ufrag = protocol.receiver.local_username
        if self._by_ufrag.get(ufrag, protocol) is not protocol:
            raise ValueError(f"ufrag {ufrag!r} is another connection's")
        self._by_ufrag[ufrag] = protocol

    def detach(self, protocol: MuxedStunProtocol) -> None:
        """Forget every route to `protocol` (its connection closed)."""
        ufrag = protocol.receiver.local_username
        if self._by_ufrag.get(ufrag) is protocol:
            del self._by_ufrag[ufrag]
        for address in protocol.addresses:
            if self._by_address.get(address) is protocol:
                del self._by_address[address]
        protocol.addresses.clear()
        for transaction in [t for t, p in self._by_transaction.items() if p is protocol]:
            del self._by_transaction[transaction]

    def expect(self, transaction_id: bytes, protocol: MuxedStunProtocol) -> None:
        self._by_transaction[transaction_id] = protocol

    def expected(self, transaction_id: bytes) -> None:
        self._by_transaction.pop(transaction_id, None)

    def addresses_of(self, connection: Connection) -> list[Address]:
        """The remote addresses routed to `connection`."""
        return [a for a, p in self._by_address.items() if p.receiver is connection]

    def routes(self) -> dict[str, int]:
        """How many connections, addresses and pending transactions are routed (leak checks)."""
        return {
            "connections": len(self._by_ufrag),
            "addresses": len(self._by_address),
            "transactions": len(self._by_transaction),
        }

    # -- receiving -----------------------------------------------------------

    def _read_all(self) -> None:
        recvfrom = self.sock.recvfrom
        route = self.route
        for _ in range(MAX_BATCH):
            try:
                data, addr = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error reported on the socket: nothing to read
                self.counts["receive_errors"] += 1
                logger.debug("UDP mux on %s:%d: %s", self.bound, self.port, exc)
                return
            route(data, addr)

    def route(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Hand one received datagram to the connection it belongs to, or drop it."""
        if len(addr) != 2:
            addr = (addr[0], addr[1])  # an IPv6 four-tuple
        protocol = self._by_address.get(addr)
        if not data:  # aiortc reads a first byte of whatever it is given
            self.counts["dropped_malformed"] += 1
        elif data[0] < 4 and data[4:8] == STUN_COOKIE:  # RFC 7983: STUN
            self._route_stun(data, addr, protocol)
        elif protocol is not None:
            protocol.deliver(data, protocol.component)
        else:
            self.counts["dropped_unknown_source"] += 1

    def _route_stun(self, data: bytes, addr: Address, known: MuxedStunProtocol | None) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            self.counts["dropped_malformed"] += 1
            return
        target: MuxedStunProtocol | None
        if message.message_class == stun.Class.REQUEST:
            username = message.attributes.get("USERNAME")
            ufrag = username.split(":", 1)[0] if isinstance(username, str) else ""
            target = self._by_ufrag.get(ufrag)
            if target is None:
                self.counts["dropped_unknown_ufrag"] += 1
                return
            key = target.receiver.local_password.encode("utf8")
            if message.message_method == stun.Method.BINDING:
                if not message.check_message_integrity(key):
                    self.counts["dropped_unauthenticated"] += 1
                    return
                self._learn(addr, target)
        elif message.message_class in (stun.Class.RESPONSE, stun.Class.ERROR):
            target = self._by_transaction.get(message.transaction_id, known)
        else:
            target = known
        if target is None:
            self.counts["dropped_unknown_source"] += 1
            return
        target.datagram_received(data, addr)

    def _learn(self, addr: Address, protocol: MuxedStunProtocol) -> None:
        owner = self._by_address.get(addr)
        if owner is protocol:
            return
        if owner is not None:  # the address now belongs to another session
            owner.addresses.pop(addr, None)
            self.counts["addresses_moved"] += 1
        if len(protocol.addresses) >= MAX_ADDRESSES:
            oldest = next(iter(protocol.addresses))
            del protocol.addresses[oldest]
            if self._by_address.get(oldest) is protocol:
                del self._by_address[oldest]
        protocol.addresses[addr] = None
        self._by_address[addr] = protocol
        self.counts["addresses_learned"] += 1

    # -- sending, closing ------------------------------------------------------

    def _send_direct(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.counts["dropped_send_full"] += 1
        except OSError as exc:
            self.counts["send_errors"] += 1
            logger.debug("UDP mux on %s:%d cannot send to %s: %s", self.bound, self.port, addr, exc)

    async def close(self) -> None:
        """Close the socket; connections still attached stop receiving."""
        if self._closed:
            return
        self._closed = True
        if self._transport is not None:
            self._transport.close()
        else:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self._by_ufrag.clear()
        self._by_address.clear()
        self._by_transaction.clear()


class _Endpoint(asyncio.DatagramProtocol):
    """The asyncio protocol of a `UdpMux` that does not batch its reads."""

    def __init__(self, mux: UdpMux) -> None:
        self._mux = mux

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._mux.route(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._mux.counts["receive_errors"] += 1
