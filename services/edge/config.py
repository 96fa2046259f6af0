"""The edge's configuration: one frozen dataclass filled from CLI flags, then ``TOPGUN_*``
environment variables, then defaults.

TopGun's own server reads a few unprefixed variables (``JWT_SECRET``, ``PORT``); the edge honours
them too so tools written for TopGun can drive it.
"""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from libs.runtime import env_default, parse_node_list

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StorageNode:
    node_id: str
    address: str  # host:port of its gRPC server


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    edge_id: str = "edge-1"
    storage_nodes: tuple[StorageNode, ...] = ()
    public_url: str = ""  # the WebSocket URL clients reach this edge at; derived when empty
    peer_edges: tuple[str, ...] = ()  # WebSocket URLs of the other edges, for PARTITION_MAP
    query_dag: str = ""  # host:port of the query_dag service, when it runs
    search: str = ""  # host:port of the search service, when it runs
    # auth
    jwt_secret: str = ""
    no_auth: bool = False
    jwt_issuer: str = ""
    jwt_audience: str = ""
    forward_auth_errors: bool = False
    auth_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    # limits
    max_frame_bytes: int = 2 * MIB
    max_depth: int = 256
    max_batch_items: int = 8192
    rate_ops_per_s: float = 20_000.0
    rate_burst: float = 40_000.0
    outbound_queue: int = 8192  # frames queued for one connection before it counts as slow
    # writes
    max_drift_ms: int = 60_000
    write_timeout_ms: int = 5_000
    max_inflight_per_owner: int = 1
    max_ops_per_call: int = 4096
    # reads
    rpc_timeout_s: float = 10.0
    log_level: str = "INFO"
    # cluster (cluster_view.py): with nats_url the table, membership and fan-out come from NATS
    nats_url: str = ""
    cluster_prefix: str = "topgun"
    member_ttl_s: float = 3.0
    colocated_storage: str = ""  # the storage node this edge stands in front of (PARTITION_MAP)
    cluster_retry_s: float = 10.0  # how long a write keeps retrying while the table moves

    @property
    def auth_required(self) -> bool:
        return not self.no_auth

    @property
    def advertised_url(self) -> str:
        """Where clients reach this edge (for PARTITION_MAP)."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"ws://{host}:{self.port}"


def parse_storage_nodes(spec: str) -> tuple[StorageNode, ...]:
    """``n1=127.0.0.1:7001,n2=127.0.0.1:7002`` -> storage nodes (order kept)."""
    return tuple(StorageNode(n, a) for n, a in parse_node_list(spec, "--storage-nodes"))


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ

    def d(name: str, fallback: object) -> object:
        return env_default(name, fallback, env)  # type: ignore[type-var]

    p = argparse.ArgumentParser(
        prog="python -m services.edge",
        description="The TopGun client edge: WebSocket + HTTP sync in front of the storage nodes.",
    )
    port_fallback = int(env.get("PORT", "8080") or 8080)
    p.add_argument("--host", default=d("TOPGUN_BIND_ADDR", "127.0.0.1"), help="bind address")
    p.add_argument(
        "--port", type=int, default=d("TOPGUN_EDGE_PORT", port_fallback), help="0 = any free port"
    )
    p.add_argument("--edge-id", default=d("TOPGUN_EDGE_ID", ""), help="unique name of this edge")
    p.add_argument(
        "--storage-nodes",
        default=d("TOPGUN_STORAGE_NODES", ""),
        help="storage nodes as id=host:port,... (required)",
    )
    p.add_argument("--public-url", default=d("TOPGUN_PUBLIC_URL", ""), help="ws:// URL clients use")
    p.add_argument(
        "--peer-edges", default=d("TOPGUN_PEER_EDGES", ""), help="other edges' ws:// URLs"
    )
    p.add_argument("--query-dag", default=d("TOPGUN_QUERY_DAG", ""), help="query_dag host:port")
    p.add_argument("--search", default=d("TOPGUN_SEARCH", ""), help="search service host:port")
    p.add_argument(
        "--jwt-secret", default=env.get("JWT_SECRET", ""), help="HS256 secret or RSA PEM"
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        default=_truthy(env.get("TOPGUN_NO_AUTH")),
        help="dev mode: no AUTH_REQUIRED, every connection is authenticated",
    )
    p.add_argument("--jwt-issuer", default=env.get("TOPGUN_JWT_ISSUER", ""))
    p.add_argument("--jwt-audience", default=env.get("TOPGUN_JWT_AUDIENCE", ""))
    p.add_argument("--max-frame-bytes", type=int, default=d("TOPGUN_MAX_FRAME_BYTES", 2 * MIB))
    p.add_argument("--max-depth", type=int, default=d("TOPGUN_MAX_DEPTH", 256))
    p.add_argument("--rate-ops", type=float, default=d("TOPGUN_RATE_OPS", 20_000.0))
    p.add_argument("--rate-burst", type=float, default=d("TOPGUN_RATE_BURST", 40_000.0))
    p.add_argument("--max-drift-ms", type=int, default=d("TOPGUN_MAX_DRIFT_MS", 60_000))
    p.add_argument("--write-timeout-ms", type=int, default=d("TOPGUN_WRITE_TIMEOUT_MS", 5_000))
    p.add_argument(
        "--max-inflight",
        type=int,
        default=d("TOPGUN_MAX_INFLIGHT", 1),
        help="write batches in flight to the storage owners at once; more ops wait and coalesce",
    )
    p.add_argument("--max-ops-per-call", type=int, default=d("TOPGUN_MAX_OPS_PER_CALL", 4096))
    p.add_argument("--idle-timeout", type=float, default=d("TOPGUN_IDLE_TIMEOUT", 60.0))
    p.add_argument("--log-level", default=d("TOPGUN_LOG_LEVEL", "INFO"))
    c = p.add_argument_group("cluster (NATS)")
    c.add_argument(
        "--nats",
        default=d("TOPGUN_NATS_URL", ""),
        help="NATS URL: follow the cluster's partition table and fan-out there (then "
        "--storage-nodes is optional)",
    )
    c.add_argument("--cluster-prefix", default=d("TOPGUN_CLUSTER_PREFIX", "topgun"))
    c.add_argument("--member-ttl", type=float, default=d("TOPGUN_MEMBER_TTL", 3.0))
    c.add_argument(
        "--colocated-storage",
        default=d("TOPGUN_COLOCATED_STORAGE", ""),
        help="id of the storage node this edge stands in front of (PARTITION_MAP endpoints)",
    )
    c.add_argument(
        "--cluster-retry",
        type=float,
        default=d("TOPGUN_CLUSTER_RETRY", 10.0),
        help="seconds a write keeps retrying on the new owner while partitions move",
    )
    return p


def config_from_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> EdgeConfig:
    env = os.environ if environ is None else environ
    ns = build_parser(env).parse_args(argv)
    nodes = parse_storage_nodes(ns.storage_nodes)
    if not nodes and not ns.nats:
        raise SystemExit("--storage-nodes (or TOPGUN_STORAGE_NODES) or --nats is required")
    no_auth = bool(ns.no_auth)
    if not no_auth and not ns.jwt_secret:
        raise SystemExit("JWT_SECRET is required unless TOPGUN_NO_AUTH=1 (or --no-auth)")
    return EdgeConfig(
        host=ns.host,
        port=ns.port,
        edge_id=ns.edge_id or f"edge-{secrets.token_hex(3)}",
        storage_nodes=nodes,
        public_url=ns.public_url,
        peer_edges=tuple(u.strip() for u in ns.peer_edges.split(",") if u.strip()),
        query_dag=ns.query_dag,
        search=ns.search,
        jwt_secret=ns.jwt_secret,
        no_auth=no_auth,
        jwt_issuer=ns.jwt_issuer,
        jwt_audience=ns.jwt_audience,
        forward_auth_errors=_truthy(env.get("INSECURE_FORWARD_AUTH_ERRORS")),
        idle_timeout_s=ns.idle_timeout,
        max_frame_bytes=ns.max_frame_bytes,
        max_depth=ns.max_depth,
        rate_ops_per_s=ns.rate_ops,
        rate_burst=ns.rate_burst,
        max_drift_ms=ns.max_drift_ms,
        write_timeout_ms=ns.write_timeout_ms,
        max_inflight_per_owner=max(1, ns.max_inflight),
        max_ops_per_call=max(1, ns.max_ops_per_call),
        log_level=ns.log_level,
        nats_url=ns.nats,
        cluster_prefix=ns.cluster_prefix,
        member_ttl_s=max(0.3, ns.member_ttl),
        colocated_storage=ns.colocated_storage,
        cluster_retry_s=max(0.0, ns.cluster_retry),
    )
