"""Fan-out across edges over NATS subjects (cluster mode), instead of one gRPC stream per storage
node per edge.

- Changes: storage nodes publish what they apply as primary on ``<prefix>.chg.<map token>``; the
  edge subscribes to ``<prefix>.chg.*``, drops maps nobody watches by the subject alone, and
  hands the ChangeBatch to ``ChangeFeeds`` like a storage stream would.
- Topics and counters: ``TOPIC_PUB`` is published by the edge itself on ``<prefix>.bc`` (no
  storage hop; one edge's connection keeps one publisher's order); counter updates arrive there
  from the counter's owner. Every edge delivers what it receives to its own subscribers.

Core NATS is at-most-once: a live subscriber can miss a change while an edge reconnects to NATS,
as it can while a gRPC stream reconnects; clients re-sync through Merkle sync as before.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from libs.cluster import broadcast_subject, changes_wildcard, map_of_token
from topgun_rpc import storage_pb2

if TYPE_CHECKING:
    from services.edge.broadcasts import BroadcastFeeds
    from services.edge.change_feed import ChangeFeeds
    from services.edge.cluster_view import ClusterView
    from services.edge.edge import Edge

log = logging.getLogger(__name__)

SOURCE = "nats"
PENDING_MSGS = 200_000
PENDING_BYTES = 256 * 1024 * 1024


class NatsFanout:
    def __init__(self, edge: Edge, view: ClusterView) -> None:
        self.edge = edge
        self.nc = view.coord.nc
        prefix = edge.config.cluster_prefix
        self.changes_subject = changes_wildcard(prefix)
        self.broadcast_subject = broadcast_subject(prefix)
        self.feeds: ChangeFeeds = edge.features["change_feed"]
        self.broadcasts: BroadcastFeeds = edge.features["broadcasts"]
        self._token_maps: dict[str, str] = {}
        self._subs: list[Any] = []
        self.received = 0

    async def start(self) -> None:
        self._subs.append(
            await self.nc.subscribe(
                self.changes_subject,
                cb=self._on_change,
                pending_msgs_limit=PENDING_MSGS,
                pending_bytes_limit=PENDING_BYTES,
            )
        )
        self._subs.append(
            await self.nc.subscribe(
                self.broadcast_subject,
                cb=self._on_broadcast,
                pending_msgs_limit=PENDING_MSGS,
                pending_bytes_limit=PENDING_BYTES,
            )
        )
        await self.nc.flush(timeout=10)
        self.feeds.set_source_live(SOURCE, True)
        self.broadcasts.set_source_live(SOURCE, True)
        log.info("edge %s follows changes and broadcasts on NATS", self.edge.edge_id)

    async def close(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe failed: %r", exc)

    async def _on_change(self, msg: Any) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        name = self._token_maps.get(token)
        if name is None:
            try:
                name = map_of_token(token)
            except ValueError:
                return
            self._token_maps[token] = name
        if not self.feeds.watching(name):
            return
        batch = storage_pb2.ChangeBatch()
        batch.ParseFromString(msg.data)
        self.received += len(batch.ops.keys)
        self.feeds.deliver(batch)

    async def _on_broadcast(self, msg: Any) -> None:
        item = storage_pb2.Broadcast()
        item.ParseFromString(msg.data)
        self.broadcasts.deliver(item)

    async def publish_topic(
        self, topic: str, data: bytes, *, publisher_id: str, origin: str
    ) -> None:
        item = storage_pb2.Broadcast(
            topic=storage_pb2.TopicMessage(
                topic=topic,
                data=data,
                publisher_id=publisher_id,
                origin=origin,
                timestamp_ms=int(time.time() * 1000),
            )
        )
        await self.nc.publish(self.broadcast_subject, item.SerializeToString())


def install(edge: Edge) -> None:
    view: ClusterView | None = edge.features.get("cluster")
    if view is None:
        return
    fanout = NatsFanout(edge, view)
    edge.features["nats_fanout"] = fanout
    edge.on_stop(fanout.close)

    async def start() -> None:
        try:
            await fanout.start()
        except Exception:
            log.exception("subscribing to the NATS fan-out failed")
            raise

    edge.spawn(start(), name="nats-fanout")  # the readiness gates wait for the subscriptions
