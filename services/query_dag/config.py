"""The query_dag coordinator's configuration: CLI flag, then ``TOPGUN_*`` environment, then default."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from libs.runtime import env_default, parse_node_list


@dataclass(frozen=True, slots=True)
class QueryDagConfig:
    host: str
    port: int
    storage_nodes: tuple[tuple[str, str], ...]  # (node id, host:port) of every storage node
    backup_count: int  # as the storage nodes were started with (their static table)
    job_timeout_ms: int  # a job's deadline when the caller gives none
    fragment_attempts: int  # tries per partition before a job fails
    hold_rows: int  # rows held per fragment until it finishes, so a failed one can be retried
    status_history: int  # finished jobs kept for Status
    rpc_timeout_ms: int  # deadline of small calls to storage nodes (partition info, cancel)
    table_refresh_ms: int  # how often the storage nodes' partition table is re-read
    log_level: str


def parse_nodes(text: str, flag: str = "--storage-nodes") -> tuple[tuple[str, str], ...]:
    """``id1=host:port,id2=host:port`` -> ``(("id1", "host:port"), ...)``."""
    return parse_node_list(text, flag)


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    e = os.environ if env is None else env
    p = argparse.ArgumentParser(
        prog="python -m services.query_dag",
        description=(
            "The TopGun DAG coordinator: plans queries and analytics jobs as Source -> Transform "
            "-> Sink DAGs, runs their fragments on the storage nodes that hold the partitions, "
            "merges the partial results and streams them to the caller over gRPC."
        ),
    )
    p.add_argument("--host", default=env_default("TOPGUN_QUERY_DAG_HOST", "127.0.0.1", e))
    p.add_argument(
        "--port",
        type=int,
        default=env_default("TOPGUN_QUERY_DAG_PORT", 0, e),
        help="gRPC port; 0 picks a free one (announced as PORT=<n> on stdout)",
    )
    p.add_argument(
        "--storage-nodes",
        "--peers",
        dest="storage_nodes",
        default=env_default("TOPGUN_STORAGE_PEERS", "", e),
        help="every storage node as id=host:port,... (the same list the storage nodes get)",
    )
    p.add_argument("--backup-count", type=int, default=env_default("TOPGUN_BACKUP_COUNT", 1, e))
    p.add_argument(
        "--job-timeout-ms", type=int, default=env_default("TOPGUN_JOB_TIMEOUT_MS", 60_000, e)
    )
    p.add_argument(
        "--fragment-attempts",
        type=int,
        default=env_default("TOPGUN_FRAGMENT_ATTEMPTS", 3, e),
        help="tries per partition (on the owner, then its backups) before a job fails",
    )
    p.add_argument(
        "--hold-rows",
        type=int,
        default=env_default("TOPGUN_HOLD_ROWS", 200_000, e),
        help="rows held per fragment until it finishes, so that a failed fragment can be "
        "retried without duplicates; past it results stream and a failure fails the job",
    )
    p.add_argument(
        "--status-history", type=int, default=env_default("TOPGUN_STATUS_HISTORY", 256, e)
    )
    p.add_argument(
        "--rpc-timeout-ms", type=int, default=env_default("TOPGUN_RPC_TIMEOUT_MS", 3000, e)
    )
    p.add_argument(
        "--table-refresh-ms",
        type=int,
        default=env_default("TOPGUN_TABLE_REFRESH_MS", 5000, e),
        help="how often to re-read the storage nodes' partition table",
    )
    p.add_argument("--log-level", default=env_default("TOPGUN_LOG_LEVEL", "INFO", e))
    return p


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> QueryDagConfig:
    a = build_parser(env).parse_args(argv)
    nodes = parse_nodes(a.storage_nodes)
    if not nodes:
        raise SystemExit("--storage-nodes: name at least one storage node (id=host:port)")
    return QueryDagConfig(
        host=a.host,
        port=a.port,
        storage_nodes=nodes,
        backup_count=max(0, a.backup_count),
        job_timeout_ms=max(1, a.job_timeout_ms),
        fragment_attempts=max(1, a.fragment_attempts),
        hold_rows=max(0, a.hold_rows),
        status_history=max(1, a.status_history),
        rpc_timeout_ms=max(1, a.rpc_timeout_ms),
        table_refresh_ms=max(100, a.table_refresh_ms),
        log_level=a.log_level,
    )
