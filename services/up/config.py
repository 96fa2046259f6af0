"""The launcher's configuration. It speaks TopGun's server process contract: ``--port`` (``PORT``
env as fallback, 0 = any free port), ``JWT_SECRET``, ``TOPGUN_NO_AUTH``, ``STORAGE_BACKEND=null``
for in-memory storage, and it accepts TopGun's cluster flags."""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from libs.runtime import env_default


@dataclass(frozen=True, slots=True)
class LaunchConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    storage_nodes: int = 3
    storage: str = "sqlite"  # sqlite | memory | postgresql://...
    data_dir: str = "./data"
    no_auth: bool = False
    edge_id: str = "edge-1"
    workdir: str = ""
    log_level: str = "INFO"
    # the coordination store and TopGun's cluster flags (cluster.py)
    nats_url: str = ""  # an existing NATS (cluster) to use instead of starting one
    nats_replicas: int = 0  # 0 = as many as the cluster allows, up to 3
    node_id: str = ""
    cluster_port: int = 0
    seed_nodes: tuple[str, ...] = ()
    # optional services left out (by module name: "search", "query_dag")
    without: frozenset[str] = frozenset()

    @property
    def clustered(self) -> bool:
        """Started as one member of a cluster (TopGun's --node-id/--cluster-port/--seed-nodes)."""
        return bool(self.cluster_port)

    @property
    def member_name(self) -> str:
        return self.node_id or f"node-{self.cluster_port}"


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def storage_from_env(env: Mapping[str, str]) -> str:
    backend = env.get("STORAGE_BACKEND", "").strip()
    if backend.lower() in ("null", "memory", "none"):
        return "memory"
    if backend.lower().startswith(("postgres://", "postgresql://")):
        return backend
    if env.get("TOPGUN_STORAGE_DSN"):
        return env["TOPGUN_STORAGE_DSN"]
    return env_default("TOPGUN_STORAGE", "sqlite", env)


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m services.up",
        description=(
            "Start TopGun-py on this machine: storage nodes, then the edge; print the WebSocket "
            "URL and PORT=<n> once everything is healthy; stop everything on Ctrl-C/SIGTERM. "
            "Environment: JWT_SECRET (client tokens; without it the launcher runs in no-auth dev "
            "mode), TOPGUN_NO_AUTH=1, STORAGE_BACKEND=null (in-memory)."
        ),
    )
    port_default = int(env.get("PORT", "") or 8080)
    p.add_argument("--port", type=int, default=port_default, help="edge port; 0 = any free port")
    p.add_argument("--host", default=env_default("TOPGUN_BIND_ADDR", "127.0.0.1", env))
    p.add_argument(
        "--storage-nodes", type=int, default=env_default("TOPGUN_STORAGE_NODES_N", 3, env)
    )
    p.add_argument(
        "--storage",
        default=storage_from_env(env),
        help="sqlite (default), memory, or a postgresql:// DSN",
    )
    p.add_argument("--data-dir", default=env_default("TOPGUN_DATA_DIR", "./data", env))
    p.add_argument("--no-auth", action="store_true", default=_truthy(env.get("TOPGUN_NO_AUTH")))
    p.add_argument("--log-level", default=env_default("TOPGUN_LOG_LEVEL", "INFO", env))
    p.add_argument(
        "--nats",
        default=env_default("TOPGUN_NATS_URL", "", env),
        help="use this NATS (cluster) for coordination instead of starting a server",
    )
    p.add_argument(
        "--nats-replicas",
        type=int,
        default=env_default("TOPGUN_NATS_REPLICAS", 0, env),
        help="JetStream replicas of the coordination buckets (0 = up to 3 as members allow)",
    )
    p.add_argument(
        "--no-search",
        action="store_true",
        default=_truthy(env.get("TOPGUN_NO_SEARCH")),
        help="do not start the search service (SEARCH requests then get an error)",
    )
    p.add_argument(
        "--no-query-dag",
        action="store_true",
        default=_truthy(env.get("TOPGUN_NO_QUERY_DAG")),
        help="do not start the query DAG service (distributed SQL then gets an error)",
    )
    # TopGun's cluster process contract: one launcher = one cluster member.
    p.add_argument("--node-id", default="", help="this member's id (cluster mode)")
    p.add_argument(
        "--cluster-port",
        type=int,
        default=0,
        help="port the member's NATS server listens on for routes from the other members",
    )
    p.add_argument(
        "--seed-nodes",
        default="",
        help="host:port,... of other members' cluster ports to route to",
    )
    return p


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[LaunchConfig, argparse.Namespace]:
    env = os.environ if environ is None else environ
    ns = build_parser(env).parse_args(argv)
    no_auth = bool(ns.no_auth) or not env.get("JWT_SECRET")
    if ns.storage_nodes < 1:
        raise SystemExit("--storage-nodes must be at least 1")
    return (
        LaunchConfig(
            host=ns.host,
            port=ns.port,
            storage_nodes=ns.storage_nodes,
            storage=ns.storage,
            data_dir=ns.data_dir,
            no_auth=no_auth,
            edge_id=f"edge-{ns.node_id or secrets.token_hex(3)}",
            log_level=ns.log_level,
            nats_url=ns.nats,
            nats_replicas=max(0, ns.nats_replicas),
            node_id=ns.node_id,
            cluster_port=ns.cluster_port,
            seed_nodes=tuple(s.strip() for s in ns.seed_nodes.split(",") if s.strip()),
            without=frozenset(
                name
                for name, off in (("search", ns.no_search), ("query_dag", ns.no_query_dag))
                if off
            ),
        ),
        ns,
    )
