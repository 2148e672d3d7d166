"""Which login budget an address counts against: its source group."""

from __future__ import annotations

import ipaddress

# One IPv6 subscriber is usually given a whole /64 (SLAAC, privacy addresses): an
# attacker there has 2^64 addresses, so budgets per address would mean no budget.
_IPV6_GROUP_PREFIX = 64


def source_group(address: str) -> str:
    """An IPv4 address as itself, an IPv6 address as its /64, an IPv4-mapped IPv6 address
    as the IPv4 address it maps; anything else ("unknown", a unix socket) unchanged."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_GROUP_PREFIX), strict=False))
    return str(ip)
