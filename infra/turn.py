"""TURN REST credentials and the embedded coturn's configuration.

A credential is minted per media request, never stored: the username is
`expiry:subject` and the password base64(HMAC-SHA1(shared secret, username)), which
every TURN server holding the secret checks by itself (coturn's `use-auth-secret`,
draft-uberti-behave-turn-rest). The subject is a pseudonym: TURN servers log
usernames, and no name or candidate number may reach their logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

from infra.settings.turn import TurnSettings


@dataclass(frozen=True)
class IceServer:
    """One entry of RTCConfiguration.iceServers, as RFC 9725 section 4.6 links it."""

    url: str
    username: str | None = None
    credential: str | None = None


def rest_credential(
    secret: str, subject: str, ttl_s: int, now: float | None = None
) -> tuple[str, str]:
    """(username, password) valid until now + ttl_s on every server sharing `secret`."""
    if ":" in subject:
        raise ValueError("a TURN subject cannot hold ':' (it separates the expiry)")
    expiry = int(now if now is not None else time.time()) + ttl_s
    username = f"{expiry}:{subject}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(turn: TurnSettings, subject: str, now: float | None = None) -> list[IceServer]:
    """The TURN servers a client may use, each with a fresh credential for `subject`."""
    urls = turn.client_urls
    if not urls:
        return []
    username, password = rest_credential(
        turn.shared_secret.get_secret_value(), subject, turn.credential_ttl_s, now
    )
    return [IceServer(url, username, password) for url in urls]


def _ranges(networks: tuple[str, ...]) -> list[str]:
    # coturn takes peer filters as first-last ranges.
    ranges = []
    for item in networks:
        network = ipaddress.ip_network(item)
        ranges.append(f"{network[0]}-{network[-1]}")
    return ranges


def coturn_config(turn: TurnSettings, state_dir: Path) -> str:
    """turnserver.conf for the embedded server: loopback, REST auth, relays only to
    `allowed_peer_networks`, no TLS/DTLS listeners (nothing outside loopback reaches
    it), no admin CLI."""
    data = state_dir / "turn"
    lines = [
        f"listening-ip={turn.listen_address}",
        f"listening-port={turn.port}",
        f"relay-ip={turn.relay_address}",
        f"min-port={turn.relay_min_port}",
        f"max-port={turn.relay_max_port}",
        f"realm={turn.realm}",
        "use-auth-secret",
        f"static-auth-secret={turn.shared_secret.get_secret_value()}",
        "fingerprint",
        "no-cli",
        "no-tls",
        "no-dtls",
        "no-multicast-peers",
        "no-software-attribute",
        # Everything is refused, then the media networks are allowed back (coturn checks
        # allowed-peer-ip before denied-peer-ip).
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        *(f"allowed-peer-ip={r}" for r in _ranges(turn.allowed_peer_networks)),
        f"userdb={(data / 'turndb').resolve()}",
        f"pidfile={(data / 'turnserver.pid').resolve()}",
        "log-file=stdout",
        "simple-log",
    ]
    if any(ipaddress.ip_network(n).is_loopback for n in turn.allowed_peer_networks):
        lines.append("allow-loopback-peers")
    return "\n".join(lines) + "\n"
