"""The address a request comes from, believing X-Forwarded-For from trusted proxies only.

uvicorn's own X-Forwarded-For handling (which trusts 127.0.0.1 by default) is turned off
where the gateway is started (`--no-proxy-headers`), so that this is the one place.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from fastapi import Request

from infra.errors import MalformedInput

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=16)
def _networks(specs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(spec) for spec in specs)


def _address(hop: str) -> Address:
    """One X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`."""
    text = hop.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise MalformedInput(
            "X-Forwarded-For holds something that is not an address",
            reason="invalid_forwarded_for",
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: Address, networks: Sequence[Network]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


def forwarded_client(peer: str, forwarded_for: Sequence[str], networks: Sequence[Network]) -> str:
    """The client behind `peer`: walking X-Forwarded-For from the right, the first hop
    that is not a trusted proxy. Entries left of it were written by the client itself
    (anyone can send the header), so they are never read."""
    try:
        current = _address(peer)
    except MalformedInput:
        return peer  # not an IP peer (a unix socket): nothing to walk
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    while _trusted(current, networks) and hops:
        current = _address(hops.pop())
    return str(current)


def client_address(request: Request, trusted_proxies: Sequence[str]) -> str:
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies:
        return peer
    values = request.headers.getlist("x-forwarded-for")
    return forwarded_client(peer, values, _networks(tuple(trusted_proxies)))
