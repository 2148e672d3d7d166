"""ICE restart (RFC 8445 section 2.4) in place, under a live DTLS association.

aiortc cannot restart ICE: a new ICE username fragment and password in an offer
are ignored, and a new offer/answer would make a new DTLS transport, and so new
SRTP contexts. An exam session must survive a network change (Wi-Fi to
cellular) without that, so ICE is restarted inside the one aioice `Connection`
an `RTCIceTransport` holds, which the DTLS transport reads and writes through
(`recv` / `send`, and `actors.media.aiortc.rtp_output` through its nominated
pairs): what above it is (DTLS, SRTP, the RTP senders and receivers, the data
queue) never sees the restart.

A restart, on either side:

1. `begin`: new local credentials (a `UdpMux` learns the new ufrag and forgets
   the old one); the check list, its running checks, the remote candidates and
   the remote end-of-candidates are dropped (aiortc's gatherer keeps its own
   flag of the latter, reset too). Checks that arrive before the peer's new
   credentials are known wait, as aioice keeps those that come before
   `connect()`. The nominated pair stays, and keeps carrying media, until a new
   one is nominated ("make before break"); so does the consent loop.
   On the side that moved, `begin(..., hosts=...)` gathers host candidates on
   the new addresses, and the old ones are retired: no new pair uses them, and
   their sockets close once the new pair carries the media.
2. `remote`: the peer's new credentials; then its candidates, by aiortc's own
   `addIceCandidate`.
   `abandon` undoes `begin` when the peer refuses the restart.
3. `run`: the checks, paced every 20 ms as aioice's `connect()` paces them
   (RFC 8445 Ta), the ones that waited replayed; it ends when every component
   has a newly nominated pair (True) or after `timeout_s` (False: the old pair,
   if it still works, goes on; consent decides the rest).

aioice's own `connect()` cannot be run again for step 3: with the old pair
still nominated it would call the check list complete at the first answer and
cancel the checks it still needs. Every private name used here is in
`PRIVATE_API` (the `ice_restart_*` entries) and checked by
`actors.media.aiortc.rtc.missing_private_api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import string
from collections.abc import Sequence
from typing import Any, Final

from aioice.candidate import Candidate
from aioice.ice import CandidatePair, Connection, StunProtocol

from actors.media.aiortc.private_api import PRIVATE_API
from actors.media.aiortc.udp_mux import MuxedStunProtocol

logger = logging.getLogger(__name__)

ICE_CHARS: Final = string.ascii_letters + string.digits  # ice-char also has + and /
UFRAG: Final = re.compile(r"^[A-Za-z0-9+/]{4,256}$")  # RFC 8839 section 5.4
PWD: Final = re.compile(r"^[A-Za-z0-9+/]{22,256}$")
CHECK_PACING_S: Final = 0.02  # aioice's Ta
UFRAG_LENGTH: Final = 8
PWD_LENGTH: Final = 24

_CHECK_LIST = PRIVATE_API["ice_restart_check_list"]
_REMOTE_CANDIDATES = PRIVATE_API["ice_restart_remote_candidates"]
_REMOTE_END = PRIVATE_API["ice_restart_remote_end"]
_GATHERER_REMOTE_END = PRIVATE_API["ice_restart_gatherer_remote_end"]
_LOCAL_USERNAME = PRIVATE_API["ice_local_username"]
_LOCAL_PASSWORD = PRIVATE_API["ice_restart_local_password"]
_LOCAL_CANDIDATES = PRIVATE_API["ice_restart_local_candidates"]
_EARLY_CHECKS = PRIVATE_API["ice_restart_early_checks"]
_EARLY_CHECKS_DONE = PRIVATE_API["ice_restart_early_checks_done"]
_NOMINATING = PRIVATE_API["ice_restart_nominating"]
_NOMINATED = PRIVATE_API["ice_nominated"]
_PROTOCOLS = PRIVATE_API["ice_protocols"]
_GATHER = PRIVATE_API["ice_component_candidates"]
_CHECK_INCOMING = PRIVATE_API["ice_restart_check_incoming"]
_CHECK_START = PRIVATE_API["ice_restart_check_start"]


def valid_credentials(ufrag: str, pwd: str) -> bool:
    """Whether `ufrag` and `pwd` are well-formed ICE credentials (RFC 8839 section 5.4)."""
    return bool(UFRAG.match(ufrag) and PWD.match(pwd))


def _draw(length: int) -> str:
    return "".join(secrets.choice(ICE_CHARS) for _ in range(length))


class IceRestart:
    """One ICE restart of one aioice connection; see the module's doc for its steps."""

    def __init__(self, connection: Connection, gatherer: Any) -> None:
        self.connection = connection
        self._gatherer = gatherer  # aiortc's RTCIceGatherer, which keeps its own end flag
        nominated: dict[int, CandidatePair] = getattr(connection, _NOMINATED)
        self._nominated = nominated
        self._old = dict(nominated)  # component -> the pair that carries media meanwhile
        self._retired: list[StunProtocol] = []
        self._gathered: list[StunProtocol] = []
        self._credentials = (connection.local_username, connection.local_password)
        self._local = list(connection.local_candidates)
        self.local_candidates: list[Candidate] = []

    async def begin(self, *, hosts: Sequence[str] = ()) -> tuple[str, str]:
        """New local credentials, a clean check list; gather on `hosts` when given.

        Returns the new (ufrag, pwd), which the peer must be told.
        """
        connection = self.connection
        if not self._old:
            raise ConnectionError("ICE restart before ICE connected")
        self._reset_checks()
        setattr(connection, _EARLY_CHECKS_DONE, False)  # hold checks until `remote`
        getattr(connection, _EARLY_CHECKS).clear()
        ufrag = self._new_ufrag()
        pwd = _draw(PWD_LENGTH)
        setattr(connection, _LOCAL_USERNAME, ufrag)
        setattr(connection, _LOCAL_PASSWORD, pwd)
        for protocol in getattr(connection, _PROTOCOLS):
            if isinstance(protocol, MuxedStunProtocol):
                protocol.mux.rekey(protocol)
        if hosts:
            await self._move(hosts)
        self.local_candidates = list(connection.local_candidates)
        return ufrag, pwd

    async def abandon(self) -> None:
        """Undo `begin` when the peer refused the restart: old credentials, old sockets
        (the nominated pair never changed), the new sockets closed."""
        connection = self.connection
        ufrag, pwd = self._credentials
        setattr(connection, _LOCAL_USERNAME, ufrag)
        setattr(connection, _LOCAL_PASSWORD, pwd)
        protocols: list[StunProtocol] = getattr(connection, _PROTOCOLS)
        if self._retired:
            protocols[:] = self._retired
            self._retired = []
        for protocol in protocols:
            if isinstance(protocol, MuxedStunProtocol):
                protocol.mux.rekey(protocol)
        getattr(connection, _LOCAL_CANDIDATES)[:] = self._local
        setattr(connection, _EARLY_CHECKS_DONE, True)
        getattr(connection, _EARLY_CHECKS).clear()
        gathered, self._gathered = self._gathered, []
        for protocol in gathered:
            with contextlib.suppress(Exception):
                await protocol.close()

    def remote(self, ufrag: str, pwd: str) -> None:
        """The peer's new credentials; its candidates follow by `addIceCandidate`."""
        if not valid_credentials(ufrag, pwd):
            raise ValueError("malformed ICE credentials")
        self.connection.remote_username = ufrag
        self.connection.remote_password = pwd

    async def run(self, timeout_s: float) -> bool:
        """Run the checks until each component has a new nominated pair (True), or time out."""
        connection = self.connection
        check_list: list[CandidatePair] = getattr(connection, _CHECK_LIST)
        setattr(connection, _EARLY_CHECKS_DONE, True)
        early = getattr(connection, _EARLY_CHECKS)
        check_incoming = getattr(connection, _CHECK_INCOMING)
        for message, addr, protocol in list(early):
            if protocol in getattr(connection, _PROTOCOLS):
                check_incoming(message, addr, protocol)
        early.clear()
        start = getattr(connection, _CHECK_START)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.done:
            if not getattr(connection, _PROTOCOLS):  # closed meanwhile
                return False
            if loop.time() > deadline or connection.remote_password is None:
                logger.info("ICE restart of %s found no new pair in %.1f s", connection, timeout_s)
                return False
            pair = next(
                (p for p in check_list if p.state == CandidatePair.State.WAITING), None
            ) or next((p for p in check_list if p.state == CandidatePair.State.FROZEN), None)
            if pair is not None:
                start(pair)
            await asyncio.sleep(CHECK_PACING_S)
        self._gathered = []
        await self._close_retired()
        return True

    @property
    def done(self) -> bool:
        return all(self._nominated.get(c) not in (None, old) for c, old in self._old.items())

    def _reset_checks(self) -> None:
        connection = self.connection
        check_list: list[CandidatePair] = getattr(connection, _CHECK_LIST)
        for pair in check_list:
            if pair.task is not None:
                pair.task.cancel()
        check_list.clear()
        getattr(connection, _NOMINATING).clear()
        getattr(connection, _REMOTE_CANDIDATES).clear()
        setattr(connection, _REMOTE_END, False)
        setattr(self._gatherer, _GATHERER_REMOTE_END, False)

    def _new_ufrag(self) -> str:
        muxes = {
            id(p.mux): p.mux
            for p in getattr(self.connection, _PROTOCOLS)
            if isinstance(p, MuxedStunProtocol)
        }.values()
        while True:
            ufrag = _draw(UFRAG_LENGTH)
            if not any(mux.holds(ufrag) for mux in muxes):
                return ufrag

    async def _move(self, hosts: Sequence[str]) -> None:
        """Gather on `hosts`; the other local candidates leave the check list's reach."""
        connection = self.connection
        protocols: list[StunProtocol] = getattr(connection, _PROTOCOLS)
        self._retired = list(protocols)
        protocols.clear()
        gathered: list[Candidate] = []
        for component in sorted({p.local_candidate.component for p in self._retired}):
            gathered += await getattr(connection, _GATHER)(component, list(hosts))
        self._gathered = list(protocols)
        if not protocols:
            protocols.extend(self._retired)
            self._retired = []
            raise ConnectionError(f"cannot gather on {list(hosts)}")
        local: list[Candidate] = getattr(connection, _LOCAL_CANDIDATES)
        local[:] = gathered

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for protocol in retired:
            with contextlib.suppress(Exception):
                await protocol.close()
