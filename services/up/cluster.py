"""The coordination store the launcher runs, and TopGun's cluster process contract.

``make up`` (no cluster flags) starts one NATS server with JetStream on a free loopback port
(data under ``<data-dir>/nats``, or a temporary directory with in-memory storage) before the
other services and hands its URL to them; with ``--nats URL`` (``TOPGUN_NATS_URL``) the services
use that NATS (cluster) instead and no server is started.

Started with TopGun's cluster flags (``--node-id``, ``--cluster-port``, ``--seed-nodes
host:port,...``), one launcher is one cluster member: a NATS server that listens for routes on
``--cluster-port`` and routes to the seeds (so the launchers' servers form one JetStream Raft
group; the coordination buckets are replicated on up to three of them), a storage node and the
edge in front of it on ``--port``. A member restarted on the same ports finds its NATS data under
``<data-dir>/nats/<node-id>-<cluster-port>`` and rejoins the group.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from libs.cluster import NatsServer, start_nats_server
from services.up.config import LaunchConfig

NATS_READY_TIMEOUT_S = 20.0


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class CoordinationStore:
    """The NATS server this launcher owns (if any) and the URL the services use."""

    url: str
    server: NatsServer | None = None
    temp_dir: str | None = None
    replicas: int = 1
    expect_members: int = 0
    routes: tuple[str, ...] = field(default_factory=tuple)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def storage_args(self) -> list[str]:
        args = ["--nats", self.url, "--nats-replicas", str(self.replicas)]
        if self.expect_members:
            args += ["--expect-members", str(self.expect_members)]
        return args

    def edge_args(self) -> list[str]:
        return ["--nats", self.url]


async def start_store(config: LaunchConfig) -> CoordinationStore:
    """Start (or point at) the coordination store for this launch."""
    if config.nats_url:
        return CoordinationStore(config.nats_url, replicas=config.nats_replicas or 1)
    if config.clustered:
        return await _start_member_server(config)
    temp_dir = None
    if config.storage == "memory":
        temp_dir = tempfile.mkdtemp(prefix="topgun-nats-")
        store_dir = temp_dir
    else:
        store_dir = os.path.join(config.data_dir, "nats")
    # Started from the event loop's own thread: the parent-death signal follows the thread that
    # forked, and a worker thread may end before the launcher does.
    server = start_nats_server(
        port=free_port(),
        store_dir=store_dir,
        server_name="topgun-up",
        ready_timeout=NATS_READY_TIMEOUT_S,
        die_with_parent=True,
    )
    return CoordinationStore(server.url, server, temp_dir)


async def _start_member_server(config: LaunchConfig) -> CoordinationStore:
    name = config.member_name
    store_dir = os.path.join(config.data_dir, "nats", f"{name}-{config.cluster_port}")
    bind = "127.0.0.1" if config.host in ("127.0.0.1", "localhost") else config.host
    server = start_nats_server(
        port=free_port(),
        store_dir=store_dir,
        server_name=name,
        cluster_port=config.cluster_port,
        cluster_host=bind,
        routes=config.seed_nodes,
        ready_timeout=NATS_READY_TIMEOUT_S,
        die_with_parent=True,
    )
    size = 1 + len([s for s in config.seed_nodes if not s.endswith(f":{config.cluster_port}")])
    return CoordinationStore(
        server.url,
        server,
        replicas=config.nats_replicas or min(3, size),
        expect_members=size,
        routes=config.seed_nodes,
    )
