"""Prometheus metrics of one edge, in their own registry (several edges may share a process in
tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class EdgeMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.connections = Gauge(
            "topgun_edge_connections", "open WebSocket connections", registry=r
        )
        self.frames_in = Counter(
            "topgun_edge_frames_in", "inbound frames by message type", ["type"], registry=r
        )
        self.frames_out = Counter("topgun_edge_frames_out", "outbound frames", registry=r)
        self.bad_frames = Counter(
            "topgun_edge_bad_frames",
            "frames answered with ERROR or dropped",
            ["reason"],
            registry=r,
        )
        self.ops_acked = Counter("topgun_edge_ops_acked", "ops acknowledged to clients", registry=r)
        self.ops_rejected = Counter("topgun_edge_ops_rejected", "ops rejected", registry=r)
        self.apply_calls = Counter(
            "topgun_edge_apply_calls", "Apply calls to storage owners", ["node"], registry=r
        )
        self.apply_batch = Histogram(
            "topgun_edge_apply_batch_ops",
            "ops per Apply call",
            buckets=(1, 4, 16, 64, 256, 1024, 4096),
            registry=r,
        )
        self.write_latency = Histogram(
            "topgun_edge_write_seconds",
            "frame received to OP_ACK queued",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.rate_limited = Counter(
            "topgun_edge_rate_limited", "frames refused with 429", registry=r
        )
        self.slow_consumers = Counter(
            "topgun_edge_slow_consumers", "connections closed for not reading", registry=r
        )
        self.live_queries = Gauge("topgun_edge_live_queries", "active live queries", registry=r)
        self._frame_children: dict[str, Any] = {}
        self.changes_in = Counter(
            "topgun_edge_changes_in", "change-feed records received", registry=r
        )

    def count_frame(self, message_type: str) -> None:
        """Count one inbound frame (label children cached: ``labels()`` is slow per call)."""
        child = self._frame_children.get(message_type)
        if child is None:
            if len(self._frame_children) >= 256:  # a client inventing types gets one bucket
                message_type = "other"
            child = self._frame_children.setdefault(
                message_type, self.frames_in.labels(message_type)
            )
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
