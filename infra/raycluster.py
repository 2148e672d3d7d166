"""Connecting a process (gateway, CLI, tests) to the Ray cluster as a driver."""

from __future__ import annotations

import logging
import os

import ray

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
    os.environ.update(auth_mode_env())
    ray.init(
        address=settings.ray_head_address,
        namespace=settings.ray_namespace,
        # Without this Ray picks the eth0 address and finds no local raylet.
        _node_ip_address=settings.ray_head_ip,
        logging_level=logging.WARNING,
        log_to_driver=settings.env != "production",
        configure_logging=False,
    )
