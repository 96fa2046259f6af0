"""The search service's configuration: CLI flag, then ``TOPGUN_*`` environment, then default."""

from __future__ import annotations

import argparse
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from libs.runtime import env_default, parse_node_list
from services.search.mapspec import MapConfigError, SearchableMaps


@dataclass(frozen=True, slots=True)
class SearchConfig:
    host: str
    port: int
    service_id: str
    storage_nodes: tuple[tuple[str, str], ...]  # (node id, host:port)
    backend: str  # "disk" or "memory"
    data_dir: str
    maps: SearchableMaps
    commit_interval_ms: int
    max_uncommitted: int
    heap_mb: int
    subscriber_queue: int
    rpc_timeout_s: float
    log_level: str

    @property
    def index_dir(self) -> str | None:
        return None if self.backend == "memory" else self.data_dir


def parse_storage_nodes(spec: str) -> tuple[tuple[str, str], ...]:
    """``n1=127.0.0.1:7001,n2=...`` (or bare ``host:port`` entries) -> ((id, address), ...)."""
    return parse_node_list(spec, "--storage-nodes", allow_bare=True)


def _backend_default(env: Mapping[str, str]) -> str:
    if env.get("STORAGE_BACKEND", "").strip().lower() in ("null", "memory", "none"):
        return "memory"
    return env_default("TOPGUN_SEARCH_BACKEND", "disk", env)


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    e = os.environ if env is None else env
    p = argparse.ArgumentParser(
        prog="python -m services.search",
        description=(
            "TopGun search: one tantivy index per searchable map, fed by the storage nodes' change "
            "feeds (resumed from remembered positions after a restart); BM25 search with terms, "
            "phrases, prefixes, fuzzy terms, boolean operators and boosts; live searches that "
            "emit ENTER/UPDATE/LEAVE. Serves gRPC (proto/topgun_rpc/search.proto)."
        ),
    )
    p.add_argument("--host", default=env_default("TOPGUN_SEARCH_HOST", "127.0.0.1", e))
    p.add_argument(
        "--port",
        type=int,
        default=env_default("TOPGUN_SEARCH_PORT", 0, e),
        help="gRPC port; 0 picks a free one (announced as PORT=<n> on stdout)",
    )
    p.add_argument("--service-id", default=env_default("TOPGUN_SEARCH_ID", "", e))
    p.add_argument(
        "--storage-nodes",
        "--peers",
        dest="storage_nodes",
        default=env_default("TOPGUN_STORAGE_NODES", "", e),
        help="storage nodes to follow, as id=host:port,... (required)",
    )
    p.add_argument(
        "--backend",
        choices=("disk", "memory"),
        default=_backend_default(e),
        help="where indexes live: disk (under --data-dir, resumable) or memory "
        "(STORAGE_BACKEND=null selects memory)",
    )
    p.add_argument(
        "--data-dir",
        default=env_default("TOPGUN_SEARCH_DATA_DIR", "", e),
        help="index folder; default <TOPGUN_DATA_DIR or ./data>/search",
    )
    p.add_argument(
        "--maps",
        default=env_default("TOPGUN_SEARCH_MAPS", "", e),
        help="searchable maps and fields: JSON or a JSON file (see services/search/mapspec.py); "
        "default: every string field of every map",
    )
    p.add_argument(
        "--commit-interval-ms",
        type=int,
        default=env_default("TOPGUN_SEARCH_COMMIT_INTERVAL_MS", 250, e),
        help="longest a change waits before it is committed (searchable)",
    )
    p.add_argument(
        "--max-uncommitted",
        type=int,
        default=env_default("TOPGUN_SEARCH_MAX_UNCOMMITTED", 50_000, e),
        help="commit early once this many changes wait",
    )
    p.add_argument("--heap-mb", type=int, default=env_default("TOPGUN_SEARCH_HEAP_MB", 32, e))
    p.add_argument(
        "--subscriber-queue",
        type=int,
        default=env_default("TOPGUN_SEARCH_SUBSCRIBER_QUEUE", 1024, e),
        help="update batches a subscriber may lag before it is dropped",
    )
    p.add_argument("--rpc-timeout", type=float, default=env_default("TOPGUN_RPC_TIMEOUT", 10.0, e))
    p.add_argument("--log-level", default=env_default("TOPGUN_LOG_LEVEL", "INFO", e))
    return p


def load_config(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> SearchConfig:
    e = os.environ if env is None else env
    a = build_parser(e).parse_args(argv)
    nodes = parse_storage_nodes(a.storage_nodes)
    if not nodes:
        raise SystemExit("--storage-nodes (or TOPGUN_STORAGE_NODES) is required")
    try:
        maps = SearchableMaps.parse(a.maps)
    except MapConfigError as err:
        raise SystemExit(f"--maps: {err}") from None
    data_dir = a.data_dir or os.path.join(e.get("TOPGUN_DATA_DIR", "./data"), "search")
    if a.commit_interval_ms < 1 or a.max_uncommitted < 1 or a.heap_mb < 16:
        raise SystemExit("--commit-interval-ms and --max-uncommitted >= 1, --heap-mb >= 16")
    return SearchConfig(
        host=a.host,
        port=a.port,
        service_id=a.service_id or f"search-{secrets.token_hex(3)}",
        storage_nodes=nodes,
        backend=a.backend,
        data_dir=data_dir,
        maps=maps,
        commit_interval_ms=a.commit_interval_ms,
        max_uncommitted=a.max_uncommitted,
        heap_mb=a.heap_mb,
        subscriber_queue=max(1, a.subscriber_queue),
        rpc_timeout_s=a.rpc_timeout,
        log_level=a.log_level,
    )
