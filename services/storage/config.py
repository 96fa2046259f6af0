"""The storage node's configuration: CLI flag, then ``TOPGUN_*`` environment, then default."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from libs.runtime import env_default, parse_node_list


@dataclass(frozen=True, slots=True)
class StorageConfig:
    node_id: str
    host: str
    port: int
    peers: tuple[tuple[str, str], ...]  # (node id, host:port), this node included; () = alone
    backup_count: int
    storage: str  # "sqlite", "memory", or a postgresql:// DSN
    data_dir: str
    sqlite_path: str
    pg_schema: str
    max_value_bytes: int
    write_timeout_ms: int  # how long Apply waits for a write concern when the caller gives none
    feed_queue_batches: int
    scan_page_size: int
    compact_after: int  # sqlite: logged changes that trigger folding the log into snapshots
    log_level: str
    commit_linger_ms: float = 0.0  # how long a commit nobody waits for may gather more writes
    # cluster (with nats_url; empty = the static table from peers)
    nats_url: str = ""
    cluster_prefix: str = "topgun"
    member_ttl_s: float = 3.0
    nats_replicas: int = 1
    nats_ready_timeout_s: float = 60.0
    expect_members: int = 0
    max_migrations: int = 271

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def node_ids(self) -> list[str]:
        return [n for n, _ in self.peers] or [self.node_id]


def parse_peers(text: str) -> tuple[tuple[str, str], ...]:
    """``id1=host:port,id2=host:port`` -> ``(("id1", "host:port"), ...)``."""
    return parse_node_list(text, "--peers")


def _storage_default(env: Mapping[str, str]) -> str:
    if env.get("TOPGUN_STORAGE_DSN"):
        return env["TOPGUN_STORAGE_DSN"]
    backend = env.get("STORAGE_BACKEND", "").strip().lower()
    if backend in ("null", "memory", "none"):
        return "memory"
    if backend.startswith(("postgres://", "postgresql://")):
        return env["STORAGE_BACKEND"].strip()
    return env_default("TOPGUN_STORAGE", "sqlite", env)


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    e = os.environ if env is None else env
    p = argparse.ArgumentParser(
        prog="python -m services.storage",
        description=(
            "A TopGun storage node: holds the partitions the partition table gives it, merges "
            "batches of CRDT ops, persists them (group commit), replicates to backups, and "
            "serves reads, scans, Merkle leaf sums and a resumable change feed over gRPC."
        ),
    )
    p.add_argument("--node-id", default=env_default("TOPGUN_NODE_ID", "storage-1", e))
    p.add_argument("--host", default=env_default("TOPGUN_STORAGE_HOST", "127.0.0.1", e))
    p.add_argument(
        "--port",
        type=int,
        default=env_default("TOPGUN_STORAGE_PORT", 0, e),
        help="gRPC port; 0 picks a free one (announced as PORT=<n> on stdout)",
    )
    p.add_argument(
        "--peers",
        default=env_default("TOPGUN_STORAGE_PEERS", "", e),
        help="every storage node as id=host:port,... (this one included); empty = standalone",
    )
    p.add_argument("--backup-count", type=int, default=env_default("TOPGUN_BACKUP_COUNT", 1, e))
    p.add_argument(
        "--storage",
        default=_storage_default(e),
        help="sqlite (default), memory, or a postgresql:// DSN (env TOPGUN_STORAGE_DSN; "
        "STORAGE_BACKEND=null selects memory)",
    )
    p.add_argument("--data-dir", default=env_default("TOPGUN_DATA_DIR", "./data", e))
    p.add_argument(
        "--sqlite-path",
        default=env_default("TOPGUN_SQLITE_PATH", "", e),
        help="default: <data-dir>/storage-<node-id>.sqlite3",
    )
    p.add_argument(
        "--pg-schema",
        default=env_default("TOPGUN_PG_SCHEMA", "", e),
        help="PostgreSQL schema of this node's tables; default: topgun_storage_<node-id>",
    )
    p.add_argument(
        "--max-value-bytes",
        type=int,
        default=env_default("TOPGUN_MAX_VALUE_BYTES", 1 << 20, e),
    )
    p.add_argument(
        "--write-timeout-ms", type=int, default=env_default("TOPGUN_WRITE_TIMEOUT_MS", 5000, e)
    )
    p.add_argument(
        "--feed-queue-batches",
        type=int,
        default=env_default("TOPGUN_FEED_QUEUE_BATCHES", 1024, e),
        help="batches a change-feed subscriber may lag before it is dropped",
    )
    p.add_argument(
        "--scan-page-size", type=int, default=env_default("TOPGUN_SCAN_PAGE_SIZE", 1000, e)
    )
    p.add_argument(
        "--compact-after",
        type=int,
        default=env_default("TOPGUN_COMPACT_AFTER", 200_000, e),
        help="sqlite: fold the change log into partition snapshots once it holds this many "
        "changes (or twice as many as the snapshots hold, if more)",
    )
    p.add_argument(
        "--commit-linger-ms",
        type=float,
        default=env_default("TOPGUN_COMMIT_LINGER_MS", 5.0, e),
        help="how long a commit that no PERSISTED write waits for may gather more writes "
        "(fewer transactions and syncs under a trickle of small writes; 0 = commit at once)",
    )
    p.add_argument("--log-level", default=env_default("TOPGUN_LOG_LEVEL", "INFO", e))
    c = p.add_argument_group("cluster (NATS JetStream coordination)")
    c.add_argument(
        "--nats",
        default=env_default("TOPGUN_NATS_URL", "", e),
        help="NATS URL of the coordination store; membership and the partition table then live "
        "there (empty = the static table of --peers)",
    )
    c.add_argument("--cluster-prefix", default=env_default("TOPGUN_CLUSTER_PREFIX", "topgun", e))
    c.add_argument(
        "--member-ttl",
        type=float,
        default=env_default("TOPGUN_MEMBER_TTL", 3.0, e),
        help="seconds without a heartbeat after which a member counts as gone",
    )
    c.add_argument(
        "--nats-replicas",
        type=int,
        default=env_default("TOPGUN_NATS_REPLICAS", 1, e),
        help="JetStream replicas of the coordination buckets (3 in a three-server NATS cluster)",
    )
    c.add_argument(
        "--expect-members",
        type=int,
        default=env_default("TOPGUN_EXPECT_MEMBERS", 0, e),
        help="storage nodes the first table waits for (a few seconds at most); 0 = --peers count",
    )
    c.add_argument(
        "--max-migrations",
        type=int,
        default=env_default("TOPGUN_MAX_MIGRATIONS", 271, e),
        help="partitions migrating at the same time",
    )
    return p


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> StorageConfig:
    a = build_parser(env).parse_args(argv)
    peers = parse_peers(a.peers)
    if peers and a.node_id not in dict(peers):
        raise SystemExit(f"--peers must include this node ({a.node_id})")
    port = a.port
    if peers and port == 0:
        port = int(dict(peers)[a.node_id].rsplit(":", 1)[1])
    sqlite_path = a.sqlite_path or os.path.join(a.data_dir, f"storage-{a.node_id}.sqlite3")
    return StorageConfig(
        node_id=a.node_id,
        host=a.host,
        port=port,
        peers=peers,
        backup_count=max(0, a.backup_count),
        storage=a.storage,
        data_dir=a.data_dir,
        sqlite_path=sqlite_path,
        pg_schema=a.pg_schema or f"topgun_storage_{a.node_id}",
        max_value_bytes=a.max_value_bytes,
        write_timeout_ms=a.write_timeout_ms,
        feed_queue_batches=a.feed_queue_batches,
        scan_page_size=max(1, a.scan_page_size),
        compact_after=max(1, a.compact_after),
        log_level=a.log_level,
        commit_linger_ms=max(0.0, a.commit_linger_ms),
        nats_url=a.nats,
        cluster_prefix=a.cluster_prefix,
        member_ttl_s=max(0.3, a.member_ttl),
        nats_replicas=max(1, a.nats_replicas),
        expect_members=a.expect_members or len(peers),
        max_migrations=max(1, a.max_migrations),
    )
