"""A live exam room as a pure function of its journal: `apply(event)` is all there is.

The room shard applies each event after Redis has stored it, and a restarted
shard rebuilds the same state by applying the stored events again (from the
last snapshot on). Nothing here does I/O.

The free text of help requests and messages arrives sealed (`core.room_text`: under
`SEALED_TEXT`, in place of `text`) and is kept sealed here: the state never holds, nor
snapshots, the clear text. Events journaled before that carry `text` in clear.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from actors.rooms.journal import event_order
from core.room_text import SEALED_TEXT

MAX_MESSAGES = 500
# A candidate's open help request is one entry, whatever they send: a second request
# replaces the first, and its text is cut here, so a room's state stays bounded. (A
# sealed text cannot be cut here: the gateway refuses one longer than this.)
MAX_HELP_TEXT = 500
HELP_KINDS = ("hand", "message")


@dataclass
class Presence:
    state: str = "absent"  # absent | joined | disconnected | left | ended
    network: str = "unknown"
    last_heartbeat: float = 0.0
    joined_at: float = 0.0
    session: str = ""
    heartbeats: int = 0


@dataclass
class RoomState:
    key: str
    presence: dict[str, Presence] = field(default_factory=dict)
    proctors: set[str] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    help: dict[str, dict[str, Any]] = field(default_factory=dict)  # cid -> open request
    # The last `reconnect` (a media drain, cluster.drain) to the whole room ("") or to one
    # candidate (cid): one entry each, so bounded by the roster.
    reconnects: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_event_id: str = "0-0"
    event_count: int = 0

    def apply(self, event_id: str, event: dict[str, Any]) -> None:
        kind = event["type"]
        at = float(event["at"])
        cid = event.get("cid")
        if cid is not None:
            presence = self.presence.setdefault(cid, Presence())
            if kind == "joined":
                presence.state = "joined"
                presence.joined_at = at
                presence.last_heartbeat = at
                presence.network = event.get("network", presence.network)
                presence.session = event.get("session", presence.session)
            elif kind == "heartbeat":
                presence.state = "joined"
                presence.last_heartbeat = at
                presence.heartbeats += 1
                presence.network = event.get("network") or presence.network
            elif kind == "network":
                presence.network = event["network"]
            elif kind in ("disconnected", "left", "ended"):
                presence.state = kind
            elif kind == "session_replaced":
                presence.session = event.get("session", "")
            elif kind == "help":
                self._raise_help(event_id, cid, event, at)
            elif kind == "help_lowered":
                self.help.pop(cid, None)
        if kind == "proctor_joined":
            self.proctors.add(event["proctor"])
        elif kind == "proctor_left":
            self.proctors.discard(event["proctor"])
        elif kind == "message":
            self.messages.append({"id": event_id, **event})
            del self.messages[:-MAX_MESSAGES]
            # A proctor's answer to one candidate settles that candidate's request.
            to = event.get("to")
            if to is not None:
                self.help.pop(to, None)
        elif kind == "reconnect":
            self.reconnects[cid or ""] = {
                "id": event_id,
                "plane": event.get("plane", "media"),
                "reason": event.get("reason"),
                "retry_after": event.get("retry_after"),
            }
        elif kind == "incident":
            self.incidents[event_id] = {"id": event_id, "status": "open", **event}
        elif kind == "incident_reviewed":
            incident = self.incidents.get(event["incident"])
            if incident is not None:
                incident["status"] = event["decision"]
                incident["reviewed_by"] = event["proctor"]
        self.last_event_id = event_id
        self.event_count += 1

    def _raise_help(self, event_id: str, cid: str, event: dict[str, Any], at: float) -> None:
        kind = event.get("kind")
        previous = self.help.get(cid)
        said = _said(event)
        if said is None and previous is not None:
            said = _said(previous)  # a hand raised after a message keeps the message
        name, text = said or ("text", None)
        self.help[cid] = {
            "id": event_id,
            "cid": cid,
            "kind": kind if kind in HELP_KINDS else "hand",
            name: text,
            "at": at,
            "since": previous["since"] if previous is not None else at,
        }

    def overdue(self, now: float, timeout: float) -> list[str]:
        return [
            cid
            for cid, p in self.presence.items()
            if p.state == "joined" and now - p.last_heartbeat > timeout
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "presence": {cid: asdict(p) for cid, p in self.presence.items()},
            "proctors": sorted(self.proctors),
            "messages": self.messages,
            "incidents": self.incidents,
            "help": self.help,
            "reconnects": self.reconnects,
            "last_event_id": self.last_event_id,
            "event_count": self.event_count,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> RoomState:
        return cls(
            key=data["key"],
            presence={cid: Presence(**p) for cid, p in data["presence"].items()},
            proctors=set(data["proctors"]),
            messages=list(data["messages"]),
            incidents=dict(data["incidents"]),
            help=dict(data.get("help", {})),  # snapshots from before help requests lack it
            reconnects=dict(data.get("reconnects", {})),  # as those from before reconnects
            last_event_id=data["last_event_id"],
            event_count=int(data["event_count"]),
        )

    def view_for(self, cid: str) -> dict[str, Any]:
        """What a candidate may see: their own presence, the messages meant for them, and
        the last `reconnect` meant for them (theirs or the room's, whichever is newer).

        The reconnect is here because the candidate page reads this view at every
        heartbeat (`GET /v1/me/room`) and has no other channel from the room: a page
        that sees a `reconnect` id newer than its join publishes its media again at once,
        rather than when the draining shard stops under it."""
        presence = self.presence.get(cid, Presence())
        return {
            "room": self.key.split("/", 1)[1],
            "presence": asdict(presence),
            "messages": [m for m in self.messages if m.get("to") in (None, cid)],
            "help": self.help.get(cid),
            "reconnect": self.reconnect_for(cid),
        }

    def beat_answer(self, event_id: str, cid: str) -> dict[str, Any]:
        """A committed beat's answer: its event, the candidate's state, their last reconnect."""
        return {
            "event_id": event_id,
            "state": self.presence[cid].state,
            "reconnect": self.reconnect_for(cid),
        }

    def reconnect_for(self, cid: str) -> dict[str, Any] | None:
        """The last `reconnect` meant for this candidate: theirs or the room's, the newer."""
        told = [r for r in (self.reconnects.get(""), self.reconnects.get(cid)) if r]
        return max(told, key=lambda r: event_order(r["id"])) if told else None


def _said(record: dict[str, Any]) -> tuple[str, str] | None:
    """The text of a help event or request, with the field that holds it: sealed
    (`SEALED_TEXT`, as the gateway sends it) or in clear (`text`, as journaled before it
    sealed, cut to `MAX_HELP_TEXT`); None for a request without text."""
    sealed, text = record.get(SEALED_TEXT), record.get("text")
    if isinstance(sealed, str) and sealed:
        return SEALED_TEXT, sealed
    if isinstance(text, str) and text:
        return "text", text[:MAX_HELP_TEXT]
    return None
