"""Whose media a session carries, as the MediaShard and its consumers need to know it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Source = Literal["camera", "screen", "side", "talkback", "probe"]
# What a viewer may watch of a candidate. Not `probe`: the pre-join test session
# (`POST /v1/whip/me/probe`) measures the candidate's link and nothing more; it is never
# recorded, sampled or forwarded (`Forwarder` refuses all three whatever the settings say).
CANDIDATE_SOURCES: tuple[Source, ...] = ("camera", "screen", "side")
PROBE: Source = "probe"


@dataclass(frozen=True, slots=True)
class SessionTag:
    """The exam, room and candidate of a publisher session (ids only, never names).

    `cid` is the candidate who publishes (camera, screen, side, probe) or whom a
    proctor's talk-back addresses; None for talk-back to the whole room.
    """

    exam: str
    room: str
    cid: str | None
    source: Source
