"""Routing live-search updates to subscribers (edges), each over its own Updates stream.

Every subscriber has one bounded queue of update batches. A commit's updates are grouped by
subscriber and offered without waiting; a subscriber whose queue is full is dropped (its stream
ends with RESOURCE_EXHAUSTED and its subscriptions are removed), so a slow edge never holds up
indexing or other edges — it reconnects and subscribes again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.search.live import LiveSearches, SearchUpdate

log = logging.getLogger(__name__)


@dataclass(eq=False)
class UpdateStream:
    subscriber: str
    queue: asyncio.Queue[list[SearchUpdate] | None]
    dropped: bool = False
    replaced: bool = False


class Subscribers:
    def __init__(self, live: LiveSearches, queue_size: int = 1024) -> None:
        self.live = live
        self.queue_size = queue_size
        self._streams: dict[str, UpdateStream] = {}
        self.dropped_total = 0

    def __contains__(self, subscriber: str) -> bool:
        return subscriber in self._streams

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, subscriber: str) -> UpdateStream:
        """A new stream for ``subscriber``; an older stream of the same subscriber ends."""
        old = self._streams.get(subscriber)
        if old is not None:
            old.replaced = True
            if not old.queue.full():
                old.queue.put_nowait(None)  # wakes its stream, which then ends
        stream = UpdateStream(subscriber, asyncio.Queue(self.queue_size))
        self._streams[subscriber] = stream
        return stream

    def close(self, stream: UpdateStream) -> None:
        """The stream ended: the subscriber's subscriptions go with it (unless it was replaced)."""
        if self._streams.get(stream.subscriber) is stream:
            del self._streams[stream.subscriber]
            n = self.live.remove_subscriber(stream.subscriber)
            log.info("subscriber %r left; %d subscriptions dropped", stream.subscriber, n)

    def deliver(self, updates: list[SearchUpdate]) -> None:
        by_subscriber: dict[str, list[SearchUpdate]] = {}
        for u in updates:
            by_subscriber.setdefault(u.subscriber, []).append(u)
        for subscriber, batch in by_subscriber.items():
            stream = self._streams.get(subscriber)
            if stream is None:
                continue
            try:
                stream.queue.put_nowait(batch)
            except asyncio.QueueFull:
                self.drop(stream)

    def drop(self, stream: UpdateStream) -> None:
        stream.dropped = True
        self.dropped_total += 1
        self.close(stream)
        log.warning(
            "subscriber %r fell behind (%d update batches queued); dropped",
            stream.subscriber,
            stream.queue.maxsize,
        )
