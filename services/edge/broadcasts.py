"""Topic messages and counter updates from every storage node.

A topic message is published to one storage node (the owner of the topic name's partition, so
one publisher's messages keep their order) and that node fans it out to every edge's
``Broadcasts`` stream; counter updates travel the same way from the counter's owner. Each edge
follows the stream of every node and hands items to the topic and counter features.

An edge is ready only once every stream is live: at start-up it publishes a probe on a topic no
client can name and waits until each node's stream delivers it back.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from libs.storage_client import StorageClient, StorageError
from topgun_rpc import storage_pb2

if TYPE_CHECKING:
    from services.edge.edge import Edge

log = logging.getLogger(__name__)

PROBE_PREFIX = "#edge-probe/"  # '#' is not allowed in client topic names
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
PROBE_INTERVAL_S = 0.25

TopicListener = Callable[[storage_pb2.TopicMessage], None]
CounterListener = Callable[[storage_pb2.CounterState], None]


class BroadcastFeeds:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self._topic_listeners: list[TopicListener] = []
        self._counter_listeners: list[CounterListener] = []
        self._live: dict[str, bool] = {}
        self._probe_topic = PROBE_PREFIX + edge.edge_id + "/" + secrets.token_hex(4)

    def on_topic(self, fn: TopicListener) -> None:
        self._topic_listeners.append(fn)

    def on_counter(self, fn: CounterListener) -> None:
        self._counter_listeners.append(fn)

    @property
    def live(self) -> bool:
        return bool(self._live) and all(self._live.values())

    def set_source_live(self, source: str, live: bool) -> None:
        """A source other than the storage streams (the NATS fan-out) is live, or not."""
        self._live[source] = live

    def deliver(self, item: storage_pb2.Broadcast) -> None:
        """Hand a topic message or counter update to the listeners."""
        which = item.WhichOneof("item")
        if which == "topic":
            if item.topic.topic.startswith(PROBE_PREFIX):
                return
            for fn in self._topic_listeners:
                try:
                    fn(item.topic)
                except Exception:
                    log.exception("topic listener failed")
        elif which == "counter":
            for cfn in self._counter_listeners:
                try:
                    cfn(item.counter)
                except Exception:
                    log.exception("counter listener failed")

    def start(self) -> None:
        if self.edge.config.nats_url:  # clustered: broadcasts arrive over NATS (nats_fanout.py)
            self._live["nats"] = False
            return
        for node, client in self.edge.router.clients.items():
            self._live[node] = False
            self.edge.spawn(self._follow(node, client), name=f"broadcasts-{node}")

    async def _follow(self, node: str, client: StorageClient) -> None:
        attempt = 0
        while True:
            prober = self.edge.spawn(self._probe(node, client), name=f"probe-{node}")
            try:
                async for item in client.broadcasts(subscriber=f"edge {self.edge.edge_id}"):
                    which = item.WhichOneof("item")
                    if which == "topic":
                        msg = item.topic
                        if msg.topic.startswith(PROBE_PREFIX):
                            if msg.topic == self._probe_topic and not self._live[node]:
                                self._live[node] = True
                                attempt = 0
                            continue
                        for fn in self._topic_listeners:
                            try:
                                fn(msg)
                            except Exception:
                                log.exception("topic listener failed")
                    elif which == "counter":
                        for cfn in self._counter_listeners:
                            try:
                                cfn(item.counter)
                            except Exception:
                                log.exception("counter listener failed")
            except asyncio.CancelledError:
                raise
            except StorageError as e:
                log.info("broadcasts of %s unavailable: %s", node, e)
            except Exception:
                log.exception("broadcasts of %s failed", node)
            finally:
                prober.cancel()
            self._live[node] = False
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _probe(self, node: str, client: StorageClient) -> None:
        """Publish probes until this node's stream has delivered one back."""
        while not self._live.get(node):
            try:
                await client.publish(
                    self._probe_topic,
                    b"\xc0",
                    origin=f"{self.edge.edge_id}/0",
                    timestamp_ms=int(time.time() * 1000),
                    timeout=2.0,
                )
            except StorageError:
                pass
            await asyncio.sleep(PROBE_INTERVAL_S)


def install(edge: Edge) -> None:
    feeds = BroadcastFeeds(edge)
    edge.features["broadcasts"] = feeds
    edge.require_ready(lambda: feeds.live)
    feeds.start()
