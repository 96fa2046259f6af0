"""Topic messages and counter updates, fanned out to every Broadcasts subscriber (the edges
filter by topic and counter name). Bounded queue per subscriber; a subscriber that cannot keep
up is dropped and reconnects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from topgun_rpc import storage_pb2

log = logging.getLogger(__name__)

DEFAULT_QUEUE = 4096


class BroadcastDropped(Exception):
    """The subscriber fell behind and was dropped."""


class _Sub:
    __slots__ = ("dropped", "name", "queue")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.queue: asyncio.Queue[storage_pb2.Broadcast] = asyncio.Queue(size)
        self.dropped = False


class BroadcastHub:
    def __init__(self, *, queue_size: int = DEFAULT_QUEUE) -> None:
        self._size = queue_size
        self._subs: set[_Sub] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def publish(self, item: storage_pb2.Broadcast) -> int:
        """Offer ``item`` to every subscriber; returns how many got it."""
        n = 0
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(item)
                n += 1
            except asyncio.QueueFull:
                sub.dropped = True
                self._subs.discard(sub)
                log.warning("broadcast subscriber %r fell behind; dropped", sub.name)
        return n

    async def stream(self, name: str) -> AsyncIterator[storage_pb2.Broadcast]:
        sub = _Sub(name, self._size)
        self._subs.add(sub)
        try:
            while True:
                item = await sub.queue.get()
                if sub.dropped:
                    raise BroadcastDropped(
                        f"broadcast subscriber {name!r} fell behind ({self._size} queued); reconnect"
                    )
                yield item
        finally:
            self._subs.discard(sub)
