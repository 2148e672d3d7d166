"""Knobs of the media forwarding library (`actors.media.sfu` and friends).

The project `Settings` nests one `MediaSettings`; every class of the library
takes it, or the values it needs, as a constructor argument.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator


class MediaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # ICE host candidates are gathered on these addresses only (aioice would
    # otherwise use every interface, and skips 127.0.0.1).
    host_addresses: tuple[str, ...] = ("127.0.0.1",)
    # Remote candidates outside these networks are dropped before ICE sees them,
    # so the forwarder never sends a packet anywhere else (mDNS names included).
    allowed_remote_networks: tuple[str, ...] = ("127.0.0.0/8",)

    # Capacity of one forwarder (one shard): peer connections, publishers and
    # viewers together. Beyond it requests get 503 shard_full with Retry-After.
    max_sessions: int = Field(default=300, ge=1)
    retry_after_s: float = Field(default=5.0, gt=0)
    max_sdp_bytes: int = Field(default=64 * 1024, ge=1024)
    # m-lines a WHEP offer may carry (a proctor watching camera+screen+side).
    max_subscribe_tracks: int = Field(default=6, ge=1)
    # Remote ICE candidates one offer (all m-lines together), or one trickle PATCH,
    # may carry; more are refused (400 too_many_candidates). A browser sends a few
    # per network interface; every one kept costs the shard connectivity checks.
    max_offer_candidates: int = Field(default=64, ge=1, le=1000)
    max_patch_candidates: int = Field(default=32, ge=1, le=1000)

    # Codecs forwarded, in order of preference when an offer has several.
    video_codecs: tuple[str, ...] = ("VP8", "H264")
    audio_codecs: tuple[str, ...] = ("opus",)

    # A session that has not connected by then is closed and its slot freed.
    connect_timeout_s: float = Field(default=20.0, gt=0)
    # At most one keyframe request per publisher track in this interval while
    # one is outstanding; more viewers asking do not multiply requests.
    keyframe_request_interval_s: float = Field(default=0.5, gt=0)

    # Recording: segment length; each segment starts on a keyframe.
    recording_enabled: bool = True
    segment_seconds: float = Field(default=30.0, gt=0)

    # Frame sampling for face checks: one decoded frame per publisher this often.
    sample_interval_s: float = Field(default=10.0, gt=0)

    # Publisher sources recorded, and sampled for face checks (talk-back is neither).
    recorded_sources: tuple[str, ...] = ("camera", "screen", "side")
    sampled_sources: tuple[str, ...] = ("camera",)

    # Around the forwarder: the gateway's WHIP/WHEP resources and the MediaShard actor.
    # ICE servers offered in WHIP/WHEP Link headers ("stun:host:port", "turn:host:port"):
    # none by default, loopback clients need none; never a public server by default.
    ice_servers: tuple[str, ...] = ()
    # A side-device pairing token (shown as a QR code) pairs one device within this time.
    pairing_ttl_s: int = Field(default=300, ge=10, le=3600)
    # A shard reports its load this often; no report for 3 intervals means "not live".
    load_report_interval_s: float = Field(default=2.0, gt=0, le=60)
    # A shard that does not answer a ping is taken for gone (its rooms move) only when
    # it has not reported for this long either; before that it is busy, not gone:
    # moving a room off a shard that still carries its sessions would split the room.
    gone_after_s: float = Field(default=30.0, gt=0, le=600)
    # Samples on their way to the face monitor at once; more are dropped and counted.
    monitor_in_flight: int = Field(default=4, ge=1, le=64)
    # Attempts at storing one recorded segment before it counts as failed.
    store_attempts: int = Field(default=4, ge=1, le=10)

    @field_validator("host_addresses")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one host address is needed")
        for address in value:
            ipaddress.ip_address(address)
        return value

    @field_validator("allowed_remote_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("ice_servers")
    @classmethod
    def _ice_servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            scheme = url.split(":", 1)[0]
            # They go into Link headers: no character that could end or split one.
            if scheme not in ("stun", "stuns", "turn", "turns") or any(c in url for c in '<>",; '):
                raise ValueError(f"not a STUN/TURN URL: {url!r}")
        return value

    @field_validator("video_codecs", "audio_codecs")
    @classmethod
    def _codecs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {"vp8", "h264", "opus"}
        unknown = [name for name in value if name.lower() not in known]
        if unknown:
            raise ValueError(f"cannot forward {unknown}; known: {sorted(known)}")
        return value
