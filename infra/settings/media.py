"""Knobs of the media forwarding library (`actors.media.sfu` and friends).

The project `Settings` nests one `MediaSettings`; every class of the library
takes it, or the values it needs, as a constructor argument.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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

    # The pre-join probe (`POST /v1/whip/me/probe`): a test publisher the shard answers,
    # never records, samples or forwards, and closes by itself after `probe_seconds`;
    # each candidate may open `probe_budget` of them per `probe_window_s`.
    probe_seconds: float = Field(default=10.0, gt=0, le=60)
    probe_budget: int = Field(default=6, ge=1, le=100)
    probe_window_s: int = Field(default=600, ge=10, le=86400)

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

    # Addresses and ports (the media shard's; `host_addresses` above are what it binds).
    # What its ICE candidates announce for each host address, in the same order (a node's
    # public address when it binds a private one); empty: the host addresses themselves.
    announced_addresses: tuple[str, ...] = ()
    # A media shard binds (and, unless `announced_addresses` says otherwise, announces)
    # the IP address of the Ray node it runs on, in place of `host_addresses`.
    use_node_address: bool = False
    # One UDP port per media shard (ICE mux): all its peer connections share one socket
    # per host address, on the first free port of udp_port .. udp_port + udp_port_span - 1
    # (so several shards of one node each take one). 0: one ephemeral socket per connection.
    udp_port: int = Field(default=0, ge=0, le=65535)
    udp_port_span: int = Field(default=1, ge=1, le=1024)
    # The shared socket is drained by one reader callback per wakeup (several datagrams a
    # call) rather than read through an asyncio datagram transport (one call a datagram).
    udp_batch_reads: bool = True

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

    @field_validator("announced_addresses")
    @classmethod
    def _announced(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            ipaddress.ip_address(address)
        return value

    @model_validator(mode="after")
    def _ports_and_announced(self) -> MediaSettings:
        binds = 1 if self.use_node_address else len(self.host_addresses)
        if self.announced_addresses and len(self.announced_addresses) != binds:
            raise ValueError(f"announced_addresses needs one address per bound one ({binds})")
        if self.udp_port and self.udp_port + self.udp_port_span - 1 > 65535:
            raise ValueError("udp_port + udp_port_span - 1 is beyond 65535")
        return self

    def on_node(self, node_address: str) -> MediaSettings:
        """These settings for a shard on the node at `node_address` (`use_node_address`)."""
        if not self.use_node_address:
            return self
        ipaddress.ip_address(node_address)
        return self.model_copy(update={"host_addresses": (node_address,)})

    def announced(self) -> dict[str, str]:
        """Bound address -> the address its candidates announce (only those that differ)."""
        pairs = zip(self.host_addresses, self.announced_addresses, strict=False)
        return {bound: shown for bound, shown in pairs if bound != shown}
