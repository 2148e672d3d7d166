"""Home networks made of Linux network namespaces: a client behind a NAT, or one whose
network blocks UDP, for the tests of TURN.

    root namespace (the platform)          router namespace          home namespace
    198.18.0.1  <-- veth -->  198.18.0.2 [masquerade, filter]  198.18.1.1 <-- veth --> 198.18.1.2

Every address is one of the test's own hosts, in namespaces (and on veth links) the
test creates and removes: 198.18.0.0/15 is set aside for testing network devices
(RFC 2544), and nothing routes it beyond these links. The router forwards the home's
packets only to 198.18.0.1 and only to the ports the test opens, masquerading them
behind its own address: the home can reach the platform's TURN server and web
front, and nothing else in the world, its host candidates included.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

PLATFORM = "198.18.0.1"
ROUTER_OUTSIDE = "198.18.0.2"
ROUTER_INSIDE = "198.18.1.1"
HOME = "198.18.1.2"


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def namespaces_possible() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"no `{tool}` binary (`make netns-tools` installs iproute2 and nftables)"
    probe = f"exd-probe-{secrets.token_hex(3)}"
    try:
        _run("ip", "netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot create a network namespace: {exc}"
    _run("ip", "netns", "del", probe)
    return None


@dataclass(frozen=True)
class HomeNetwork:
    """A home behind a masquerading router; run a program there with `argv()`."""

    home: str
    router: str
    root_link: str

    def argv(self, *command: str) -> list[str]:
        return ["ip", "netns", "exec", self.home, *command]

    def wrapper(self, directory: Path, program: str) -> Path:
        """An executable that runs `program` inside the home (for launchers that take a path)."""
        script = directory / f"{Path(program).name}-in-{self.home}"
        script.write_text(f'#!/bin/sh\nexec ip netns exec {self.home} {program} "$@"\n')
        script.chmod(0o755)
        return script


def _filter(inside: str, outside: str, tcp: Sequence[int], udp: Sequence[int]) -> str:
    def ports(values: Sequence[int]) -> str:
        return "{ " + ", ".join(str(p) for p in values) + " }"

    allowed = []
    if tcp:
        allowed.append(f'iifname "{inside}" ip daddr {PLATFORM} tcp dport {ports(tcp)} accept')
    if udp:
        allowed.append(f'iifname "{inside}" ip daddr {PLATFORM} udp dport {ports(udp)} accept')
    rules = "\n      ".join(allowed)
    return f"""
table ip home_nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{outside}" masquerade
  }}
}}
table inet home_filter {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
      ct state established,related accept
      {rules}
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
      iifname "lo" accept
      ct state established,related accept
  }}
}}
"""


@contextmanager
def home_network(*, tcp_ports: Sequence[int], udp_ports: Sequence[int]) -> Iterator[HomeNetwork]:
    """A home whose router lets through only these ports of the platform (198.18.0.1).

    `udp_ports=()` is a network that blocks UDP (a school, an office): only TURN over
    TCP gets out. Skips the test, saying why, where namespaces cannot be made.
    """
    why_not = namespaces_possible()
    if why_not is not None:
        # As root (CI here) namespaces can always be made once `make netns-tools` ran: a
        # missing tool there is a broken set-up, not a reason to skip the TURN tests.
        if os.geteuid() == 0:
            pytest.fail(why_not)
        pytest.skip(why_not)
    tag = secrets.token_hex(3)
    home, router = f"exd-home-{tag}", f"exd-rtr-{tag}"
    root_link, router_out = f"exd{tag}r0", f"exd{tag}r1"
    router_in, home_link = f"exd{tag}h0", f"exd{tag}h1"
    try:
        _run("ip", "netns", "add", home)
        _run("ip", "netns", "add", router)
        _run("ip", "link", "add", root_link, "type", "veth", "peer", "name", router_out,
             "netns", router)  # fmt: skip
        _run("ip", "addr", "add", f"{PLATFORM}/30", "dev", root_link)
        _run("ip", "link", "set", root_link, "up")
        _run("ip", "-n", router, "addr", "add", f"{ROUTER_OUTSIDE}/30", "dev", router_out)
        _run("ip", "-n", router, "link", "add", router_in, "type", "veth", "peer", "name",
             home_link, "netns", home)  # fmt: skip
        _run("ip", "-n", router, "addr", "add", f"{ROUTER_INSIDE}/24", "dev", router_in)
        _run("ip", "-n", home, "addr", "add", f"{HOME}/24", "dev", home_link)
        for namespace, links in (
            (router, ("lo", router_out, router_in)),
            (home, ("lo", home_link)),
        ):
            for link in links:
                _run("ip", "-n", namespace, "link", "set", link, "up")
        _run("ip", "-n", home, "route", "add", "default", "via", ROUTER_INSIDE)
        _run("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run("ip", "netns", "exec", router, "nft", "-f", "-",
             stdin=_filter(router_in, router_out, tcp_ports, udp_ports))  # fmt: skip
        yield HomeNetwork(home, router, root_link)
    finally:
        for namespace in (home, router):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", root_link], capture_output=True, timeout=30)
