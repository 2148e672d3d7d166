"""ICE consent freshness (RFC 7675) as the RFC words it: consent lapses 30 s after the last answer.

aioice 0.13 checks consent every ~5 s with one STUN request that gets 0.5 s
for its answer and is never retransmitted, and closes the connection after
six unanswered checks in a row. A media shard whose event loop is busy for
half a second at each check (uvloop runs due timers before it reads its
sockets, so an answer that waited in the socket still loses to the timeout)
thereby closed healthy candidates' cameras in the capacity runs, while the
candidates went on answering. RFC 7675 section 5.1 lets consent expire only
when no answer has come for 30 s.

`install` (called by `actors.media.aiortc.rtc.install`) swaps aioice's
consent loop (`PRIVATE_API["consent_check"]`) for `_query_consent`: each
check is retransmitted with STUN's backoff (0.5, 1, 2 s: over before the next
check is due), any answer renews consent, and the connection closes once none
has come for `timeout_s`. A
test may give one connection a quicker `ConsentPolicy` through
`POLICY_ATTRIBUTE`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Final

from aioice import stun
from aioice.ice import Connection

from actors.media.aiortc.private_api import PRIVATE_API

logger = logging.getLogger(__name__)

POLICY_ATTRIBUTE: Final = "examday_consent_policy"


@dataclass(frozen=True)
class ConsentPolicy:
    interval_s: float = 5.0  # RFC 7675: checks every 5 s, randomised by +-20 %
    timeout_s: float = 30.0  # RFC 7675: consent expires after 30 s without an answer
    retransmissions: int = 2  # a check gives up 3.5 s after it was sent


async def _query_consent(self: Connection) -> None:
    """Stands in for `Connection.query_consent` (started by aioice once connected)."""
    policy: ConsentPolicy = getattr(self, POLICY_ATTRIBUTE, ConsentPolicy())
    loop = asyncio.get_running_loop()
    last_answer = loop.time()
    while True:
        await asyncio.sleep(policy.interval_s * random.uniform(0.8, 1.2))
        if await _answered(self, policy.retransmissions):
            last_answer = loop.time()
        elif loop.time() - last_answer >= policy.timeout_s:
            logger.info("ICE consent expired: no answer for %.1f s", loop.time() - last_answer)
            # close() would otherwise cancel this very task
            setattr(self, PRIVATE_API["ice_consent_task"], None)
            await self.close()
            return


async def _answered(connection: Connection, retransmissions: int) -> bool:
    """Whether every nominated pair answered one consent check."""
    assert connection.remote_password is not None  # connect() has it before checks start
    key = connection.remote_password.encode("utf8")
    for pair in list(getattr(connection, PRIVATE_API["ice_nominated"]).values()):
        request = connection.build_request(pair, nominate=False)
        try:
            await pair.protocol.request(
                request, pair.remote_addr, integrity_key=key, retransmissions=retransmissions
            )
        except stun.TransactionError:
            return False
    return True


def install(connection_class: type[Connection], method_name: str) -> None:
    """Make `connection_class.<method_name>` our consent loop (idempotent)."""
    if getattr(connection_class, method_name) is not _query_consent:
        setattr(connection_class, method_name, _query_consent)
