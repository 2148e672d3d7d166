"""Connecting a process (gateway, CLI, tests) to the Ray cluster as a driver.

Always as a driver on a Ray node of the same machine (or pod), never through Ray Client:
`EXAMDAY_RAY_ADDRESS` is the GCS address (`host:6379`), and the process finds the node
started beside it (`ray start --address=...` in the gateway pod; the head of `examday
up`). A `ray://` address is refused: Ray Client puts a proxy and a second serialisation
on every actor call of the request path, and a gateway behind it is not a Ray node.
"""

from __future__ import annotations

import logging
import os

import ray

from infra.errors import ConfigError
from infra.settings import Settings

# Ray turns token authentication on by itself once ~/.ray/auth_token exists (some
# `ray` CLI commands create it), and then refuses a node or driver started without
# that token: a stale file in the home directory would break a local stack. Keep it
# off unless the operator chose a mode for the whole cluster.
AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"


def auth_mode_env() -> dict[str, str]:
    return {AUTH_MODE_VARIABLE: os.environ.get(AUTH_MODE_VARIABLE, "disabled")}


def connect(settings: Settings) -> None:
    """Join the cluster once per process; a no-op when already connected."""
    if ray.is_initialized():
        return
    address = settings.ray_head_address
    if address.startswith("ray://"):
        raise ConfigError(
            f"EXAMDAY_RAY_ADDRESS={address}: Ray Client is not supported; give the GCS"
            " address (host:6379) and run the process on a Ray node (`ray start --address=...`)"
        )
    os.environ.update(auth_mode_env())
    # The embedded stack's nodes all share this machine: name the head's, or Ray picks
    # the eth0 address and finds no raylet there. On a cluster, the node of this machine
    # (or pod) is the one Ray finds by itself.
    node_ip = settings.ray_head_ip if settings.ray_address is None else None
    ray.init(
        address=address,
        namespace=settings.ray_namespace,
        _node_ip_address=node_ip,
        logging_level=logging.WARNING,
        log_to_driver=settings.env != "production",
        configure_logging=False,
    )
