"""PARTITION_MAP: the edges clients can reach, and which edge "owns" each of the 271 partitions.

Any edge serves any key (edges are stateless and route to the storage owners themselves), so the
map only spreads a cluster-aware client's connections: partitions are dealt round-robin over the
edges, sorted by URL so that every edge with the same peer list hands out the same map.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from libs.crdt import PARTITION_COUNT

MAP_VERSION = 1


def edge_node_id(url: str) -> str:
    parts = urlsplit(url)
    return f"edge-{parts.hostname or 'localhost'}-{parts.port or 80}"


class PartitionMapView:
    def __init__(self, own_url: str, peer_urls: Sequence[str] = (), version: int = MAP_VERSION):
        self.version = version
        urls = sorted({own_url, *peer_urls})
        self._nodes = [
            {
                "nodeId": edge_node_id(u),
                "endpoints": {"websocket": u, "http": _http_url(u)},
                "status": "ACTIVE",
            }
            for u in urls
        ]
        ids = [n["nodeId"] for n in self._nodes]
        self._partitions = [
            {"partitionId": p, "ownerNodeId": ids[p % len(ids)], "backupNodeIds": []}
            for p in range(PARTITION_COUNT)
        ]

    def payload(self, now_ms: int | None = None) -> dict[str, Any]:
        return {
            "version": self.version,
            "partitionCount": PARTITION_COUNT,
            "nodes": self._nodes,
            "partitions": self._partitions,
            "generatedAt": int(time.time() * 1000) if now_ms is None else now_ms,
        }

    def answer(self, current_version: int, session: object = None) -> dict[str, Any] | None:
        """The PARTITION_MAP message for a client at ``current_version``, or None if it is current."""
        if current_version >= self.version:
            return None
        return {"type": "PARTITION_MAP", "payload": self.payload()}


def _http_url(ws_url: str) -> str:
    if ws_url.startswith("wss://"):
        return "https://" + ws_url[6:]
    if ws_url.startswith("ws://"):
        return "http://" + ws_url[5:]
    return ws_url
