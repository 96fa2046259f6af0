"""The change feed: catch-up from the store, then live changes from an in-memory fan-out.

Every applied batch's ChangeSet is offered to every subscriber's bounded queue without waiting.
A subscriber whose queue is full is dropped (its stream ends with RESOURCE_EXHAUSTED) so that it
reconnects and resumes from the seqs it saw; the store, not the queue, is the log.

A stream registers its subscription *before* it takes the catch-up snapshot, and the snapshot is
taken without yielding to the event loop, so every change lands either in the snapshot or in the
queue, never in neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from services.storage.changes import ChangeSet
from services.storage.partition_store import PartitionStore
from topgun_rpc import storage_pb2

log = logging.getLogger(__name__)

DEFAULT_QUEUE_BATCHES = 1024
CATCH_UP_PAGE = 2000
MAX_LINGER_S = 1.0
LIVE_DRAIN = 256  # queued change sets sent as one batch when a subscriber has a backlog


class SubscriberDropped(Exception):
    """The subscriber fell behind and was dropped; it should reconnect and resume."""


@dataclass(frozen=True, slots=True)
class FeedFilter:
    map_names: frozenset[str] | None  # None = every map
    partitions: frozenset[int]
    primaries_only: bool  # the subscriber asked for this node's primaries (the default)

    def wants(self, cs: ChangeSet) -> bool:
        if self.primaries_only and not cs.primary:
            return False
        return self.map_names is None or any(n in self.map_names for n in cs.map_names)

    def select(self, cs: ChangeSet) -> ChangeSet:
        parts = None if (self.primaries_only and cs.primary) else self.partitions
        return cs.filter(self.map_names, parts)


class Subscription:
    __slots__ = ("dropped", "filter", "name", "queue")

    def __init__(self, name: str, filt: FeedFilter, queue_size: int) -> None:
        self.name = name
        self.filter = filt
        self.queue: asyncio.Queue[ChangeSet] = asyncio.Queue(queue_size)
        self.dropped = False


class ChangeFanout:
    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_BATCHES) -> None:
        self._queue_size = queue_size
        self._subs: set[Subscription] = set()
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, name: str, filt: FeedFilter) -> Subscription:
        sub = Subscription(name, filt, self._queue_size)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, cs: ChangeSet) -> None:
        """Offer one batch's changes to every subscriber; never waits."""
        if not len(cs):
            return
        for sub in list(self._subs):
            if not sub.filter.wants(cs):
                continue
            try:
                sub.queue.put_nowait(cs)
            except asyncio.QueueFull:
                sub.dropped = True
                self._subs.discard(sub)
                self.dropped_total += 1
                log.warning("change feed subscriber %r fell behind; dropped", sub.name)


def _batch(cs: ChangeSet, node_id: str, caught_up: bool = False) -> storage_pb2.ChangeBatch:
    return storage_pb2.ChangeBatch(
        ops=cs.op_batch(), seqs=cs.seqs, node_id=node_id, caught_up=caught_up
    )


async def stream_changes(
    fanout: ChangeFanout,
    store: PartitionStore,
    node_id: str,
    sub_name: str,
    filt: FeedFilter,
    from_seq: Mapping[int, int],
    *,
    live_only: bool = False,
    linger_s: float = 0.0,
) -> AsyncIterator[storage_pb2.ChangeBatch]:
    """The ChangeBatch stream of one subscriber: catch-up pages, a ``caught_up`` marker, then
    live batches. Whatever is queued when a batch leaves goes with it; with ``linger_s`` the
    stream first waits that long after a change for more. Raises SubscriberDropped when the
    fan-out dropped it."""
    linger_s = min(max(0.0, linger_s), MAX_LINGER_S)
    sub = fanout.subscribe(sub_name, filt)
    try:
        if not live_only:
            snapshot = store.changes_since(filt.map_names, sorted(filt.partitions), from_seq)
            n = len(snapshot)
            for start in range(0, n, CATCH_UP_PAGE):
                yield _batch(snapshot.select(range(start, min(n, start + CATCH_UP_PAGE))), node_id)
        yield storage_pb2.ChangeBatch(node_id=node_id, caught_up=True)
        queue = sub.queue
        while True:
            sets = [await queue.get()]
            if linger_s and not sub.dropped:
                await asyncio.sleep(linger_s)
            while len(sets) < LIVE_DRAIN and not queue.empty():
                sets.append(queue.get_nowait())
            if sub.dropped:
                raise SubscriberDropped(
                    f"change feed subscriber {sub_name!r} fell behind "
                    f"({queue.maxsize} batches queued); reconnect and resume from your seqs"
                )
            selected = [s for s in (filt.select(cs) for cs in sets) if len(s)]
            if selected:
                yield _batch(
                    selected[0] if len(selected) == 1 else ChangeSet.concat(selected), node_id
                )
    finally:
        fanout.unsubscribe(sub)
