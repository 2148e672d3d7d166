"""TURN: the relay that candidates behind symmetric NATs or UDP-blocking networks need.

The platform never runs a TURN protocol itself. It hands out short-lived credentials
(the TURN REST scheme coturn implements as `use-auth-secret`: the username is
`expiry:subject`, the password an HMAC of it under a secret shared with the TURN
servers) for either the embedded coturn `examday up` starts on loopback, or an
external TURN cluster named by `urls`.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

TURN_SCHEMES = ("turn:", "turns:")


class TurnSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The embedded coturn of `examday up` (Debian's `coturn`; `make coturn` installs it).
    # Without the binary the stack starts without TURN and says so.
    embedded: bool = True
    listen_address: str = "127.0.0.1"
    port: int = Field(default=3478, ge=1, le=65535)
    # The relay's own address, and the UDP ports its allocations take (one per
    # candidate's stream: size it to the candidates that need a relay, see
    # docs/operations.md).
    relay_address: str = "127.0.0.1"
    relay_min_port: int = Field(default=61000, ge=1024, le=65535)
    relay_max_port: int = Field(default=61199, ge=1024, le=65535)
    realm: str = Field(default="examday", pattern=r"^[A-Za-z0-9.-]{1,64}$")
    # Where a relay may send: the media shards' networks only. A TURN server that relays
    # anywhere is an open proxy into the cluster network (and beyond).
    allowed_peer_networks: tuple[str, ...] = ("127.0.0.0/8",)

    # TURN URIs handed to clients in WHIP/WHEP Link headers (an external TURN cluster:
    # "turn:turn.cn-north.example:3478?transport=udp"). Unset: the embedded server,
    # over UDP and TCP.
    urls: tuple[str, ...] = ()
    # The secret shared with the TURN servers (coturn's static-auth-secret).
    shared_secret: SecretStr = SecretStr("dev-turn-shared-secret-not-for-production")
    # Credentials are checked again at every allocation refresh, so they must outlive
    # the longest session; a leaked one is useful this long and no longer.
    credential_ttl_s: int = Field(default=6 * 3600, ge=60, le=48 * 3600)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            # RFC 7065 URIs only; anything with a quote, comma or space would break the
            # Link header the URL is written into.
            if not url.startswith(TURN_SCHEMES) or any(c in url for c in "\"',; <>"):
                raise ValueError(f"not a TURN URI: {url!r}")
        return value

    @field_validator("allowed_peer_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(ipaddress.ip_network(item, strict=True)) for item in value)

    @model_validator(mode="after")
    def _ports(self) -> TurnSettings:
        if self.relay_min_port > self.relay_max_port:
            raise ValueError("relay_min_port is above relay_max_port")
        return self

    @property
    def client_urls(self) -> tuple[str, ...]:
        """What clients are told to use: the configured cluster, else the embedded server."""
        if self.urls:
            return self.urls
        if not self.embedded:
            return ()
        where = f"{self.listen_address}:{self.port}"
        return (f"turn:{where}?transport=udp", f"turn:{where}?transport=tcp")
