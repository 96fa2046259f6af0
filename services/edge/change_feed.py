"""The edge's view of what changed: one change-feed stream per storage node.

Each stream carries the changes of the partitions that node is primary for, in the order they
were applied, each with the origin (``<edge-id>/<connection-id>``) of the write that caused it.
Feature modules ``watch`` the maps their clients care about and register a listener; a batch
whose maps nobody watches is dropped after one look at its map table, so unwatched traffic costs
the edge almost nothing.

Listeners run synchronously, in feed order, and must not block: they turn changes into frames and
queue them on sessions (``Session.send_live``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from libs.storage_client import FeedDropped, StorageClient, StorageError

if TYPE_CHECKING:
    from services.edge.edge import Edge

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True, slots=True)
class FeedChange:
    """One applied change: the resulting record of ``key`` (PUT, REMOVE = LWW tombstone, OR_ADD,
    OR_REMOVE = a removed tag with the remove's timestamp)."""

    key: str
    kind: int
    millis: int
    counter: int
    node_id: str
    value: bytes
    tag: str
    ttl_ms: int
    origin: str


Listener = Callable[[str, list[FeedChange]], None]


class ChangeFeeds:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self._watched: dict[str, int] = {}
        self._listeners: list[Listener] = []
        self._resume_listeners: list[Callable[[], None]] = []
        self._caught_up: dict[str, bool] = {}

    # -- what to deliver --

    def watch(self, map_name: str) -> None:
        self._watched[map_name] = self._watched.get(map_name, 0) + 1

    def unwatch(self, map_name: str) -> None:
        n = self._watched.get(map_name, 0) - 1
        if n > 0:
            self._watched[map_name] = n
        else:
            self._watched.pop(map_name, None)

    def watching(self, map_name: str) -> bool:
        return map_name in self._watched

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def on_resume(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when a stream resumes after a gap (changes may have been missed)."""
        self._resume_listeners.append(fn)

    def _resumed(self) -> None:
        for fn in self._resume_listeners:
            try:
                fn()
            except Exception:
                log.exception("change-feed resume listener failed")

    @property
    def live(self) -> bool:
        """True once every node's stream has delivered its catch-up marker."""
        return bool(self._caught_up) and all(self._caught_up.values())

    # -- streams --

    def set_source_live(self, source: str, live: bool) -> None:
        """A source other than the storage streams (the NATS fan-out) caught up, or not."""
        self._caught_up[source] = live

    def deliver(self, batch: object) -> None:
        """Hand a ChangeBatch from another source (the NATS fan-out) to the listeners."""
        self._deliver(batch)

    def start(self) -> None:
        if self.edge.config.nats_url:  # clustered: changes arrive over NATS (nats_fanout.py)
            self._caught_up["nats"] = False
            return
        for node, client in self.edge.router.clients.items():
            self._caught_up[node] = False
            self.edge.spawn(self._follow(node, client), name=f"feed-{node}")

    async def _follow(self, node: str, client: StorageClient) -> None:
        attempt = 0
        first = True
        while True:
            try:
                async for batch in client.change_feed_batches(
                    subscriber=f"edge {self.edge.edge_id}", live_only=True
                ):
                    if batch.caught_up:
                        self._caught_up[node] = True
                        attempt = 0
                        if not first:
                            log.warning(
                                "change feed of %s resumed; re-reading live queries for the "
                                "changes made while it was down",
                                node,
                            )
                            self._resumed()
                        first = False
                    if len(batch.ops.keys):
                        self._deliver(batch)
            except asyncio.CancelledError:
                raise
            except FeedDropped:
                log.warning("change feed of %s dropped this edge for falling behind", node)
            except StorageError as e:
                log.info("change feed of %s unavailable: %s", node, e)
            except Exception:
                log.exception("change feed of %s failed", node)
            self._caught_up[node] = False
            await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
            attempt += 1

    def _deliver(self, batch: object) -> None:
        ops = batch.ops  # type: ignore[attr-defined]
        names = ops.map_names
        watched = self._watched
        wanted = [i for i, n in enumerate(names) if n in watched]
        if not wanted:
            return
        self.edge.metrics.changes_in.inc(len(ops.keys))
        single = len(names) == 1
        by_map: dict[int, list[FeedChange]] = {i: [] for i in wanted}
        map_index = ops.map_index
        n = len(ops.keys)
        for i, (key, kind, millis, counter, node, value, tag, ttl, origin) in enumerate(
            zip(
                ops.keys,
                ops.kinds,
                ops.millis,
                ops.counters,
                ops.node_ids,
                _column(ops.values, n, b""),
                _column(ops.tags, n, ""),
                _column(ops.ttl_ms, n, 0),
                _column(ops.origins, n, ""),
                strict=False,
            )
        ):
            bucket = by_map.get(0 if single else map_index[i])
            if bucket is not None:
                bucket.append(FeedChange(key, kind, millis, counter, node, value, tag, ttl, origin))
        for i, changes in by_map.items():
            if not changes:
                continue
            for fn in self._listeners:
                try:
                    fn(names[i], changes)
                except Exception:
                    log.exception("change-feed listener failed on map %s", names[i])


def _column(col: Sequence[T], n: int, fill: T) -> Sequence[T]:
    """A column of a columnar batch; an absent column (empty) reads as ``fill`` throughout."""
    return col if len(col) == n else [fill] * n


def install(edge: Edge) -> None:
    feeds = ChangeFeeds(edge)
    edge.features["change_feed"] = feeds
    edge.require_ready(lambda: feeds.live)
    feeds.start()
