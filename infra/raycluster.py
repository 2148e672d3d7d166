"""Connecting a process (gateway, CLI, tests) to the Ray cluster as a driver."""

from __future__ import annotations

import logging

import ray

from infra.settings import Settings


def connect(settings: Settings) -> None:
    """Join the cluster once per process; a no-op when already connected."""
    if ray.is_initialized():
        return
    ray.init(
        address=settings.ray_head_address,
        namespace=settings.ray_namespace,
        # Without this Ray picks the eth0 address and finds no local raylet.
        _node_ip_address=settings.ray_head_ip,
        logging_level=logging.WARNING,
        log_to_driver=settings.env != "production",
        configure_logging=False,
    )
