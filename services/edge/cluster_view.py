"""The edge as a member of a NATS-coordinated cluster, and the operator's view of the cluster.

With ``--nats`` the edge registers itself (role ``edge``, its WebSocket URL, the storage node it
stands in front of), follows the partition table and, on every newer version, switches its router
to it (a client per storage node, kept across versions) and pushes ``PARTITION_MAP`` to the
cluster clients (connections that asked for the map). The map names the storage nodes as the
cluster's nodes, each reachable at the WebSocket URL of the edge in front of it, so a cluster
client writes each key straight to an edge colocated with the key's owner.

``cluster_status(edge)`` is the JSON of ``GET /cluster``; ``ClusterCollector`` puts the same
figures in ``/metrics``. Both work for a static table too (no NATS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from libs.cluster import (
    STORAGE_META,
    SYNCED_META,
    ClusterMember,
    Coordination,
    MemberInfo,
    MembersView,
    PartitionTable,
)
from libs.crdt import PARTITION_COUNT
from libs.storage_client import StorageClient
from libs.wire import encode
from services.edge.partition_map import edge_node_id

if TYPE_CHECKING:
    from services.edge.edge import Edge
    from services.edge.session import Session

log = logging.getLogger(__name__)

FIRST_TABLE_TIMEOUT_S = 60.0


def http_url(ws_url: str) -> str:
    if ws_url.startswith("wss://"):
        return "https://" + ws_url[6:]
    if ws_url.startswith("ws://"):
        return "http://" + ws_url[5:]
    return ws_url


def partition_map_payload(table: PartitionTable, fallback_url: str) -> dict[str, Any]:
    """PARTITION_MAP (PROTOCOL.md 9) of a table. The map's nodes are the edges clients can reach:
    each partition's owner is the edge in front of its storage owner. An edge in front of exactly
    one storage node (a cluster member) carries that node's id; an edge in front of several
    (``make up``: one edge, three storage nodes) is named after its URL."""
    storage_nodes = sorted(set(table.owners) | {b for bs in table.backups for b in bs})
    url_of = {n: table.endpoints.get(n) or fallback_url for n in storage_nodes}
    behind: dict[str, list[str]] = {}
    for n in storage_nodes:
        behind.setdefault(url_of[n], []).append(n)
    name_of_url = {u: ns[0] if len(ns) == 1 else edge_node_id(u) for u, ns in behind.items()}
    node_of = {n: name_of_url[url_of[n]] for n in storage_nodes}
    nodes = [
        {
            "nodeId": name_of_url[u],
            "endpoints": {"websocket": u, "http": http_url(u)},
            "status": "ACTIVE",
        }
        for u in sorted(behind, key=lambda u: name_of_url[u])
    ]
    partitions = []
    for p, (o, bs) in enumerate(zip(table.owners, table.backups, strict=True)):
        owner = node_of[o]
        backups = list(dict.fromkeys(node_of[b] for b in bs if node_of[b] != owner))
        partitions.append({"partitionId": p, "ownerNodeId": owner, "backupNodeIds": backups})
    return {
        "version": table.version,
        "partitionCount": PARTITION_COUNT,
        "nodes": nodes,
        "partitions": partitions,
        "generatedAt": int(time.time() * 1000),
    }


class ClusterMapView:
    """The PARTITION_MAP answers of a clustered edge (same interface as ``PartitionMapView``)."""

    def __init__(self, view: ClusterView) -> None:
        self._view = view

    @property
    def version(self) -> int:
        return self._view.table.version if self._view.table else 0

    def answer(self, current_version: int, session: Session | None = None) -> dict[str, Any] | None:
        if session is not None:
            self._view.follow(session)
        table = self._view.table
        if table is None or current_version >= table.version:
            return None
        return {"type": "PARTITION_MAP", "payload": self._view.map_payload()}


class ClusterView:
    def __init__(self, edge: Edge, coord: Coordination, member: ClusterMember) -> None:
        self.edge = edge
        self.coord = coord
        self.member = member
        self.members = MembersView(coord)
        self.table: PartitionTable | None = None
        self._clients: dict[str, StorageClient] = {}  # by address, kept across versions
        self._followers: set[Session] = set()
        self._payload: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._member_task: asyncio.Task[None] | None = None
        self.map_pushes = 0

    # --- start-up -----------------------------------------------------------------------------

    @classmethod
    async def start(cls, edge: Edge) -> ClusterView:
        cfg = edge.config
        coord = await Coordination.connect(
            cfg.nats_url,
            prefix=cfg.cluster_prefix,
            member_ttl=cfg.member_ttl_s,
            lease_ttl=cfg.member_ttl_s,
            ready_timeout=FIRST_TABLE_TIMEOUT_S,
            name=f"edge {edge.edge_id}",
        )
        meta = {STORAGE_META: cfg.colocated_storage} if cfg.colocated_storage else {}
        info = MemberInfo(
            edge.edge_id,
            "edge",
            websocket=cfg.advertised_url,
            started_ms=int(time.time() * 1000),
            meta=meta,
        )
        view = cls(edge, coord, ClusterMember(coord, info))
        for client in edge.router.clients.values():
            view._clients[client.address] = client
        view.member.on_table(view._adopt)
        await view.member.register()
        view._member_task = edge.spawn(view.member.run(view._stop), name="cluster-member")
        edge.spawn(view.members.run(), name="members-view")
        edge.on_stop(view.close)
        edge.features["cluster"] = view
        if view.table is None:
            log.info("waiting for the cluster's first partition table")
            if not await view.member.wait_table(1, FIRST_TABLE_TIMEOUT_S):
                log.warning("no partition table after %.0fs", FIRST_TABLE_TIMEOUT_S)
        return view

    async def close(self) -> None:
        """Leave the cluster (the membership key goes at once, not after its TTL), then close."""
        self._stop.set()
        if self._member_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._member_task), 3.0)
        await self.coord.close()

    # --- the table ----------------------------------------------------------------------------

    def _adopt(self, table: PartitionTable) -> None:
        if self.table is not None and table.version <= self.table.version:
            return
        clients: dict[str, StorageClient] = {}
        for node, address in table.addresses.items():
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = StorageClient(
                    address, timeout=self.edge.config.rpc_timeout_s
                )
            clients[node] = client
        self.table = table
        self._payload = None
        self.edge.router.update(table, clients)
        log.info(
            "partition table version %d: %d storage nodes, %d migrating",
            table.version,
            len(table.nodes),
            len(table.pending),
        )
        if self._followers:
            frame = encode({"type": "PARTITION_MAP", "payload": self.map_payload()})
            for s in list(self._followers):
                s.send_live(frame)
            self.map_pushes += len(self._followers)

    def map_payload(self) -> dict[str, Any]:
        assert self.table is not None
        if self._payload is None:
            self._payload = partition_map_payload(self.table, self.edge.config.advertised_url)
        return self._payload

    def follow(self, session: Session) -> None:
        """``session`` is a cluster client: push it every new map."""
        if session not in self._followers:
            self._followers.add(session)
            session.on_close(lambda: self._followers.discard(session))


# --- the operator's view ---------------------------------------------------------------------------


def _table_of(edge: Edge) -> PartitionTable:
    return edge.router.table


def cluster_status(edge: Edge) -> dict[str, Any]:
    """GET /cluster: members, table version, per-partition owner/backups, migrations in flight."""
    table = _table_of(edge)
    view: ClusterView | None = edge.features.get("cluster")
    storage: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    counts = table.counts()
    if view is not None:
        now = view.coord.now_ms()
        for n, m in sorted(view.members.alive("storage").items()):
            p, b = counts.get(n, (0, 0))
            storage.append(
                {
                    "nodeId": n,
                    "address": m.address,
                    "incarnation": m.started_ms,
                    "heartbeatAgeMs": now - m.heartbeat_ms,
                    "syncedVersion": int(m.meta.get(SYNCED_META, "0") or 0),
                    "inTable": table.epochs.get(n) == m.started_ms,
                    "primaries": p,
                    "backups": b,
                }
            )
        for n, m in sorted(view.members.alive("edge").items()):
            edges.append(
                {
                    "nodeId": n,
                    "websocket": m.websocket,
                    "storage": m.meta.get(STORAGE_META, ""),
                    "heartbeatAgeMs": now - m.heartbeat_ms,
                }
            )
    else:
        for n in table.nodes:
            p, b = counts.get(n, (0, 0))
            storage.append(
                {"nodeId": n, "address": table.addresses.get(n, ""), "primaries": p, "backups": b}
            )
        edges.append({"nodeId": edge.edge_id, "websocket": edge.config.advertised_url})
    return {
        "mode": "nats" if view is not None else "static",
        "edgeId": edge.edge_id,
        "tableVersion": table.version,
        "members": {"storage": storage, "edge": edges},
        "partitions": [
            {"partition": p, "owner": o, "backups": list(b)}
            for p, (o, b) in enumerate(zip(table.owners, table.backups, strict=True))
        ],
        "migrations": [
            {"partition": p, "from": table.owners[p], "to": target}
            for p, target in sorted(table.pending.items())
        ],
        "addresses": dict(table.addresses),
        "endpoints": dict(table.endpoints),
    }


class ClusterCollector(Collector):
    """Cluster figures for /metrics, computed at scrape time from the edge's current view."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        table = _table_of(self.edge)
        view: ClusterView | None = self.edge.features.get("cluster")
        members = GaugeMetricFamily(
            "topgun_cluster_members", "live cluster members by role", labels=["role"]
        )
        if view is not None:
            for role in ("storage", "edge"):
                members.add_metric([role], len(view.members.alive(role)))
        else:
            members.add_metric(["storage"], len(table.nodes))
            members.add_metric(["edge"], 1)
        yield members
        yield GaugeMetricFamily(
            "topgun_cluster_table_version", "partition table version", value=table.version
        )
        owned = GaugeMetricFamily(
            "topgun_cluster_partitions_owned",
            "primary partitions per storage node",
            labels=["node"],
        )
        backed = GaugeMetricFamily(
            "topgun_cluster_partitions_backed_up",
            "backup partitions per storage node",
            labels=["node"],
        )
        for n, (p, b) in sorted(table.counts().items()):
            owned.add_metric([n], p)
            backed.add_metric([n], b)
        yield owned
        yield backed
        yield GaugeMetricFamily(
            "topgun_cluster_migrations", "partitions migrating now", value=len(table.pending)
        )
        router = self.edge.router
        retried = getattr(router, "retried_ops", 0)
        yield CounterMetricFamily(
            "topgun_cluster_write_retries", "ops re-sent to a new owner", value=retried
        )


def install(edge: Edge) -> None:
    """Cluster figures in /metrics; PARTITION_MAP from the cluster's table when clustered."""
    edge.metrics.registry.register(ClusterCollector(edge))
    view: ClusterView | None = edge.features.get("cluster")
    basics = edge.features.get("basics")
    if view is not None and basics is not None:
        basics.partition_map = ClusterMapView(view)
