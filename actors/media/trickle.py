"""Trickle ICE (RFC 8840 fragments in WHIP/WHEP PATCH), ICE restarts, candidate filtering.

A fragment with new credentials (a=ice-ufrag and a=ice-pwd) asks for an ICE
restart (RFC 9725 section 4.3.2); the server answers with a fragment of its own
new credentials and candidates (`ice_fragment`).

The forwarder only ever talks to remote candidates inside the configured
networks: others, including mDNS names (resolving them would multicast), are
dropped from offers and fragments before aiortc sees them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actors.media.sdp import attribute, check_candidate_count, lines, malformed, without_lines
from infra.errors import MalformedInput, PayloadTooLarge

TRICKLE_TYPE = "application/trickle-ice-sdpfrag"
ICE_UFRAG = re.compile(r"^[A-Za-z0-9+/]{4,256}$")  # RFC 8839 section 5.4
ICE_PWD = re.compile(r"^[A-Za-z0-9+/]{22,256}$")


@dataclass(frozen=True, slots=True)
class TrickleCandidate:
    mid: str | None
    mline_index: int
    candidate: str  # the value after "a=candidate:"


@dataclass(frozen=True, slots=True)
class IceFragment:
    """An `application/trickle-ice-sdpfrag` body (RFC 8840)."""

    ufrag: str | None
    pwd: str | None
    candidates: tuple[TrickleCandidate, ...]
    end_of_candidates: bool

    def is_restart(self, ufrag: str, pwd: str) -> bool:
        """New credentials mean an ICE restart (RFC 8838 section 4.4)."""
        changed_ufrag = self.ufrag is not None and self.ufrag != ufrag
        changed_pwd = self.pwd is not None and self.pwd != pwd
        return changed_ufrag or changed_pwd

    def restart_credentials(self) -> tuple[str, str]:
        """The new (ufrag, pwd) of an ICE restart; 400 `bad_ice_credentials` unless both are
        there, new and well-formed (RFC 8839 section 5.4: 4 and 22 to 256 ice-chars)."""
        ufrag, pwd = self.ufrag or "", self.pwd or ""
        if not (ICE_UFRAG.match(ufrag) and ICE_PWD.match(pwd)):
            raise MalformedInput(
                "an ICE restart needs a new a=ice-ufrag (4 to 256 ice-chars) and"
                " a=ice-pwd (22 to 256 ice-chars)",
                reason="bad_ice_credentials",
            )
        return ufrag, pwd


def ice_fragment(
    ufrag: str, pwd: str, mid: str, candidates: Sequence[str], *, end: bool = True
) -> str:
    """An `application/trickle-ice-sdpfrag` body (RFC 8840 section 4.4) with credentials:
    an ICE restart's, asked for by a client's PATCH or answered by the server's 200
    (RFC 9725 section 4.3.2). `candidates` are `a=candidate` values."""
    body = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", "m=audio 9 UDP/TLS/RTP/SAVPF 0"]
    body += [f"a=mid:{mid}", *(f"a=candidate:{c}" for c in candidates)]
    if end:
        body.append("a=end-of-candidates")
    return "\r\n".join(body) + "\r\n"


def candidate_address(candidate: str) -> str:
    """The connection address of an `a=candidate` value (RFC 8839 section 5.1)."""
    parts = candidate.split()
    if len(parts) < 8:
        raise malformed(f"bad candidate {candidate!r}")
    return parts[4]


def address_filter(networks: Sequence[str]) -> Callable[[str], bool]:
    """A predicate: is this candidate address an IP inside `networks`?"""
    allowed = [ipaddress.ip_network(n, strict=False) for n in networks]

    def allow(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # an mDNS name: resolving it would multicast
            return False
        return any(ip in network for network in allowed)

    return allow


def drop_candidates(text: str, allow: Callable[[str], bool]) -> str:
    """Remove the candidate lines of `text` whose address `allow` refuses."""
    return without_lines(
        text,
        lambda line: line.startswith("a=candidate:") and not allow(candidate_address(line[12:])),
    )


def parse_fragment(
    text: str, *, max_bytes: int = 64 * 1024, max_candidates: int = 32
) -> IceFragment:
    """Parse a trickle-ICE PATCH body; `MalformedInput(malformed_sdp)` if it is not one.

    As offers: `bad_sdp` (400) for line breaks aiortc reads otherwise, and
    `too_many_candidates` (400) past `max_candidates`.
    """
    if len(text.encode("utf-8", "replace")) > max_bytes:
        raise PayloadTooLarge(f"fragment larger than {max_bytes} bytes", reason="sdp_too_large")
    ufrag = pwd = mid = None
    mline_index = -1
    candidates = []
    end = False
    for kind, value in lines(text):
        if kind == "m":
            mline_index += 1
            mid = None
            continue
        if kind != "a":
            continue
        name, rest = attribute(value)
        if name == "ice-ufrag":
            ufrag = rest.strip()
        elif name == "ice-pwd":
            pwd = rest.strip()
        elif name == "mid":
            mid = rest.strip()
        elif name == "candidate":
            candidate_address(rest)
            candidates.append(TrickleCandidate(mid, max(mline_index, 0), rest.strip()))
        elif name == "end-of-candidates":
            end = True
    check_candidate_count(len(candidates), max_candidates, "the fragment")
    return IceFragment(ufrag, pwd, tuple(candidates), end)
