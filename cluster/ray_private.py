"""Every Ray detail beyond the public API that examday relies on: draining a node,
and checking a cluster's configuration before it is launched.

Ray (2.60 here) has no public call that marks a node draining. `ray drain-node`
is a hidden CLI whose docstring says it "is not covered by Ray's public API
stability guarantees"; it, and autoscaler v2's `ray_stopper` for idle and
preemption terminations, call `GcsClient.drain_node`, which is what we call.
Shelling out to the hidden CLI would add a process and a second connection for
the same unguaranteed call, so the call is made here, through the connected
driver's GCS client, and nowhere else.

The names are listed once in `PRIVATE_API`; `missing_private_api()` (run by
tests/cluster and before every drain) reports any that an upgrade removed, so a
broken upgrade fails a test and `examday cluster drain` refuses to start rather
than half-draining a node. Whether the call still works (the GCS accepts it and
reports the node draining) is checked by the drain test with a real second node.

`examday cluster validate` (`cluster.validate`) needs two more: the custom
resources an actor class asks for, which Ray keeps only in the class's
`_default_options`, and the launcher's own config checks (`ray up` runs them;
Ray exports them from `ray.autoscaler._private.util` only). Both are read here,
so no other module names a private part of Ray; the validate tests run them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import ray

from infra.errors import ConfigError, Conflict

PRIVATE_API: Final[Mapping[str, str]] = MappingProxyType(
    {
        # The connected driver's GCS client.
        "gcs_client": "ray._private.worker.global_worker.gcs_client",
        # (node id hex, reason, message, deadline ms) -> (accepted, rejection message)
        "drain_node": "GcsClient.drain_node",
        "drain_reason": "ray.core.generated.autoscaler_pb2.DrainNodeReason",
        # node id hex -> deadline ms, for nodes being drained
        "draining_nodes": "ray._private.state.state.get_draining_nodes",
        # the options of `@ray.remote(...)` on an actor class, "resources" among them
        "actor_class_options": "ActorClass._default_options",
        # what `ray up` runs on a cluster launcher config: fill in defaults, then check
        "launcher_config_checks": "ray.autoscaler._private.util.prepare_config, validate_config",
    }
)
# Preemption rather than idle termination: the node goes away whether or not it is busy.
DRAIN_REASON: Final = "DRAIN_NODE_REASON_PREEMPTION"


def _gcs_client() -> Any:
    return ray._private.worker.global_worker.gcs_client  # type: ignore[attr-defined]


def missing_private_api() -> list[str]:
    """Names in `PRIVATE_API` this Ray no longer has (empty when all is well).

    Needs a connected driver (`ray.init`), as the drain itself does."""
    missing = []
    try:
        client = _gcs_client()
    except AttributeError:
        client = None
    if client is None:
        missing.append("gcs_client")
    elif not callable(getattr(client, "drain_node", None)):
        missing.append("drain_node")
    try:
        from ray.core.generated import autoscaler_pb2

        autoscaler_pb2.DrainNodeReason.Value(DRAIN_REASON)  # type: ignore[attr-defined]
    except (ImportError, AttributeError, ValueError):
        missing.append("drain_reason")
    state = getattr(getattr(ray._private, "state", None), "state", None)
    if not callable(getattr(state, "get_draining_nodes", None)):
        missing.append("draining_nodes")
    return missing


def drain_node(node_id: str, deadline_s: float, message: str) -> None:
    """Ask the GCS to place nothing new on the node (blocking); raises when refused.

    The deadline tells Ray's components when the node will be gone; Ray does not
    kill the node at it."""
    missing = missing_private_api()
    if missing:
        raise ConfigError(f"this Ray lacks what draining needs: {', '.join(missing)}")
    from ray.core.generated import autoscaler_pb2

    accepted, rejection = _gcs_client().drain_node(
        node_id,
        autoscaler_pb2.DrainNodeReason.Value(DRAIN_REASON),  # type: ignore[attr-defined]
        message,
        int((time.time() + deadline_s) * 1000),
    )
    if not accepted:
        raise Conflict(f"Ray refused to drain {node_id}: {rejection}", reason="drain_refused")


def draining_nodes() -> dict[str, int]:
    """Node id -> drain deadline (ms since the epoch), for the nodes being drained."""
    found: dict[str, int] = ray._private.state.state.get_draining_nodes()
    return {str(node): int(deadline) for node, deadline in found.items()}


def actor_class_resources(actor_class: object) -> set[str]:
    """The custom resources `@ray.remote(resources=...)` asks for on `actor_class`."""
    options = getattr(actor_class, "_default_options", None) or {}
    return set(options.get("resources") or {})


def validate_launcher_config(config: dict[str, Any]) -> None:
    """Run the checks `ray up` runs on a cluster launcher config (raises when it is wrong).

    Ray fills in its defaults first; `config` is changed in place."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))
