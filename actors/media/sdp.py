"""Cheap checks of WHIP/WHEP offers and trickle-ICE fragments.

Everything here runs before a peer connection exists, so a rejected request
allocates nothing (RFC 9725 section 4.4: 422 for offers we cannot serve). The
parser reads only what the checks need; aiortc parses the offer again later.
Trickle-ICE fragments and candidate filtering are in `actors.media.trickle`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from infra.errors import (
    BadRequest,
    InvalidInput,
    MalformedInput,
    PayloadTooLarge,
    UnsupportedMediaType,
)

SDP_TYPE = "application/sdp"
# How a receiver reports the bandwidth it estimates: REMB (fed by the abs-send-time
# extension) or transport-wide congestion control.
BANDWIDTH_FEEDBACK = ("goog-remb", "transport-cc")
BANDWIDTH_EXTENSIONS = (
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
MEDIA_KINDS = ("audio", "video")
# What no SDP line holds (RFC 8866 section 9: no NUL, CR or LF in a value) and where
# aiortc, which splits with `str.splitlines`, would see a line break that our
# CRLF/LF splitter does not: a bare CR, VT, FF, FS/GS/RS, NEL, U+2028/U+2029, and
# every other C0/C1 control but tab. Refused rather than cleaned: a body that splits
# two ways hides lines (a candidate) from our checks.
_FORBIDDEN = re.compile(r"\r(?!\n)|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class Codec:
    kind: str
    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def mime_type(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str
    mid: str | None
    direction: str
    rtcp_mux: bool
    codecs: tuple[Codec, ...]
    ssrcs: tuple[int, ...]  # media SSRC first, RTX after it
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Offer:
    text: str
    media: tuple[MediaSection, ...]
    bundle: tuple[str, ...]
    ice_ufrag: str
    ice_pwd: str

    def count(self, kind: str) -> int:
        return sum(1 for m in self.media if m.kind == kind)


def check_content_type(value: str | None, expected: str) -> None:
    media_type = (value or "").split(";", 1)[0].strip().lower()
    if media_type != expected:
        raise UnsupportedMediaType(
            f"expected {expected}, got {value or 'nothing'}", accept=expected
        )


def malformed(detail: str) -> MalformedInput:
    return MalformedInput(f"malformed SDP: {detail}", reason="malformed_sdp")


def split_lines(text: str) -> list[str]:
    """The lines of `text` (SDP or a trickle fragment), ended by CRLF or LF.

    The one splitter of this package: anything aiortc would split elsewhere is
    refused (400 `bad_sdp`), so every check sees the lines aiortc will.
    """
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise MalformedInput(
            f"SDP line {line} holds the control character {bad[0]!r}", reason="bad_sdp"
        )
    return text.replace("\r\n", "\n").split("\n")


def lines(text: str) -> list[tuple[str, str]]:
    lines = []
    for number, raw in enumerate(split_lines(text), 1):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise malformed(f"line {number} is not <type>=<value>")
        lines.append((line[0], line[2:]))
    return lines


def attribute(value: str) -> tuple[str, str]:
    name, _, rest = value.partition(":")
    return name, rest


@dataclass
class _SectionDraft:
    kind: str
    fmts: list[str]
    mid: str | None = None
    direction: str | None = None
    rtcp_mux: bool = False
    rtpmap: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)
    fmtp: dict[int, dict[str, str]] = field(default_factory=dict)
    ssrcs: list[int] = field(default_factory=list)
    fid: list[int] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprint: bool = False


def _media_line(value: str) -> _SectionDraft:
    parts = value.split()
    if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
        raise malformed(f"bad m-line {value!r}")
    return _SectionDraft(kind=parts[0], fmts=parts[3:])


def _rtpmap(value: str) -> tuple[int, tuple[str, int, int | None]]:
    pt, _, encoding = value.partition(" ")
    parts = encoding.strip().split("/")
    if len(parts) < 2:
        raise malformed(f"bad rtpmap {value!r}")
    channels = int(parts[2]) if len(parts) > 2 else None
    return int(pt), (parts[0], int(parts[1]), channels)


def _fmtp(value: str) -> tuple[int, dict[str, str]]:
    pt, _, params = value.partition(" ")
    parsed = {}
    for item in params.split(";"):
        key, sep, val = item.strip().partition("=")
        if key:
            parsed[key.lower()] = val if sep else ""
    return int(pt), parsed


def _media_attribute(draft: _SectionDraft, name: str, rest: str) -> None:
    if name == "mid":
        draft.mid = rest.strip()
    elif name in DIRECTIONS:
        draft.direction = name
    elif name == "rtcp-mux":
        draft.rtcp_mux = True
    elif name == "rtpmap":
        pt, encoding = _rtpmap(rest)
        draft.rtpmap[pt] = encoding
    elif name == "fmtp":
        pt, params = _fmtp(rest)
        draft.fmtp[pt] = params
    elif name == "ssrc":
        ssrc = int(rest.split()[0])
        if ssrc not in draft.ssrcs:
            draft.ssrcs.append(ssrc)
    elif name == "ssrc-group" and rest.startswith("FID "):
        draft.fid = [int(x) for x in rest.split()[1:]]
    elif name == "candidate":
        draft.candidates.append(rest)
    elif name == "ice-ufrag":
        draft.ice_ufrag = rest.strip()
    elif name == "ice-pwd":
        draft.ice_pwd = rest.strip()
    elif name == "fingerprint":
        draft.fingerprint = True


def _section(draft: _SectionDraft, session_direction: str) -> MediaSection:
    codecs = []
    for fmt in draft.fmts:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        if pt in draft.rtpmap:
            name, clock_rate, channels = draft.rtpmap[pt]
            params = draft.fmtp.get(pt, {})
            codecs.append(Codec(draft.kind, pt, name, clock_rate, channels, params))
    ssrcs = draft.fid + [s for s in draft.ssrcs if s not in draft.fid]
    return MediaSection(
        kind=draft.kind,
        mid=draft.mid,
        direction=draft.direction or session_direction,
        rtcp_mux=draft.rtcp_mux,
        codecs=tuple(codecs),
        ssrcs=tuple(ssrcs),
        candidates=tuple(draft.candidates),
    )


def check_candidate_count(count: int, limit: int, where: str) -> None:
    """Each remote candidate kept costs connectivity checks: at most `limit` per body."""
    if count > limit:
        raise BadRequest(
            f"{count} ICE candidates in {where}; at most {limit}", reason="too_many_candidates"
        )


def parse_offer(text: str, *, max_bytes: int = 64 * 1024, max_candidates: int = 64) -> Offer:
    """Parse an SDP offer; `MalformedInput(malformed_sdp)` if it is not one.

    `bad_sdp` (400) if aiortc would read other lines than ours, `too_many_candidates`
    (400) past `max_candidates` a=candidate lines in all.
    """
    if len(text.encode("utf-8", "replace")) > max_bytes:
        raise PayloadTooLarge(f"SDP larger than {max_bytes} bytes", reason="sdp_too_large")
    parsed = lines(text)
    if not parsed or parsed[0] != ("v", "0"):
        raise malformed("must start with v=0")
    if not any(t == "o" for t, _ in parsed) or not any(t == "s" for t, _ in parsed):
        raise malformed("o= and s= lines are required")
    session: dict[str, str] = {}
    bundle: tuple[str, ...] = ()
    session_fingerprint = False
    drafts: list[_SectionDraft] = []
    try:
        for kind, value in parsed:
            if kind == "m":
                drafts.append(_media_line(value))
            elif kind == "a" and drafts:
                _media_attribute(drafts[-1], *attribute(value))
            elif kind == "a":
                name, rest = attribute(value)
                if name == "group" and rest.split()[:1] == ["BUNDLE"]:
                    bundle = tuple(rest.split()[1:])
                elif name == "fingerprint":
                    session_fingerprint = True
                else:
                    session[name] = rest.strip()
    except (ValueError, IndexError) as exc:
        raise malformed(str(exc)) from exc
    for draft in drafts:
        if draft.ice_ufrag is None and "ice-ufrag" not in session:
            raise malformed("ICE ufrag missing")
        if draft.ice_pwd is None and "ice-pwd" not in session:
            raise malformed("ICE password missing")
        if not (draft.fingerprint or session_fingerprint):
            raise malformed("DTLS fingerprint missing")
    check_candidate_count(sum(len(d.candidates) for d in drafts), max_candidates, "the offer")
    direction = next((d for d in DIRECTIONS if d in session), "sendrecv")
    first = drafts[0] if drafts else _SectionDraft(kind="", fmts=[])
    return Offer(
        text=text,
        media=tuple(_section(d, direction) for d in drafts),
        bundle=bundle,
        ice_ufrag=first.ice_ufrag or session.get("ice-ufrag", ""),
        ice_pwd=first.ice_pwd or session.get("ice-pwd", ""),
    )


def _check_common(offer: Offer, directions: Sequence[str]) -> None:
    if not offer.media:
        raise InvalidInput("the offer has no media", reason="no_tracks")
    for media in offer.media:
        if media.kind not in MEDIA_KINDS:
            raise InvalidInput(f"{media.kind} m-lines are not served", reason="unsupported_media")
    for media in offer.media:
        if media.direction not in directions:
            raise InvalidInput(
                f"{media.kind} is {media.direction}; expected one of {list(directions)}",
                reason="wrong_direction",
            )
    mids = [m.mid for m in offer.media]
    if not offer.bundle or any(mid is None or mid not in offer.bundle for mid in mids):
        raise InvalidInput("all m-lines must be in one BUNDLE group", reason="bundle_required")
    if not all(m.rtcp_mux for m in offer.media):
        raise InvalidInput("every m-line needs a=rtcp-mux", reason="rtcp_mux_required")


def check_publish(offer: Offer) -> None:
    """A WHIP offer: at most one audio and one video track, sent to us."""
    if offer.count("audio") > 1 or offer.count("video") > 1:
        raise InvalidInput("at most one audio and one video track", reason="too_many_tracks")
    _check_common(offer, ("sendonly", "sendrecv"))


def check_subscribe(offer: Offer, *, max_tracks: int) -> None:
    """A WHEP offer: tracks we send, at most `max_tracks` of them."""
    if len(offer.media) > max_tracks:
        raise InvalidInput(f"at most {max_tracks} tracks", reason="too_many_tracks")
    _check_common(offer, ("recvonly", "sendrecv"))


def without_bandwidth_feedback(text: str) -> str:
    """`text` (an offer) less the bandwidth feedback and the header extensions behind it.

    For WHEP viewers: the forwarder sends each viewer the one encoding its
    publisher sends and has nothing lighter to switch a slow viewer to, so a
    viewer's estimate would be computed by the viewer, sent, decrypted and thrown
    away here (a tenth of each viewer's cost on a media shard: `examday bench
    media`). NACK, PLI and FIR stay: the forwarder answers those. A publisher's
    offer keeps its feedback: the shard's estimate paces the publisher's encoder.
    """
    return without_lines(text, _is_bandwidth_feedback)


def _is_bandwidth_feedback(line: str) -> bool:
    name, _, value = line.partition(":")
    words = value.split()  # rtcp-fb: <pt> <type>; extmap: <id>[/<direction>] <uri>
    return len(words) >= 2 and (
        (name == "a=rtcp-fb" and words[1] in BANDWIDTH_FEEDBACK)
        or (name == "a=extmap" and words[1] in BANDWIDTH_EXTENSIONS)
    )


def without_lines(text: str, drop: Callable[[str], bool]) -> str:
    """`text` (SDP) less the lines `drop` picks, with CRLF line ends."""
    return "\r\n".join(line for line in split_lines(text) if not drop(line))
