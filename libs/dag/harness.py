"""Drive one processor with lists, no executor and no event loop (Jet's ``TestSupport``).

The outbox takes only ``capacity`` items between drains, so every processor is exercised on
its "stop early, get called again" path, not only on the happy one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from libs.dag.processor import Inbox, Processor, ProcessorContext

_MAX_CALLS = 1_000_000


class ListOutbox:
    """An outbox that refuses once ``capacity`` items wait in any bucket."""

    def __init__(self, buckets: int = 1, capacity: int = 1) -> None:
        self.buckets: list[list[Any]] = [[] for _ in range(buckets)]
        self.capacity = capacity

    @property
    def bucket_count(self) -> int:
        return len(self.buckets)

    def has_room(self, ordinal: int | None = None) -> bool:
        ords = range(len(self.buckets)) if ordinal is None else (ordinal,)
        return all(len(self.buckets[o]) < self.capacity for o in ords)

    def offer(self, item: Any, ordinal: int | None = None) -> bool:
        if not self.has_room(ordinal):
            return False
        ords = range(len(self.buckets)) if ordinal is None else (ordinal,)
        for o in ords:
            self.buckets[o].append(item)
        return True

    def drain(self, ordinal: int = 0) -> list[Any]:
        out, self.buckets[ordinal] = self.buckets[ordinal], []
        return out


def run_processor(
    processor: Processor,
    inputs: Mapping[int, Sequence[Any]] | Sequence[Any] = (),
    *,
    capacity: int = 1,
    context: ProcessorContext | None = None,
) -> list[Any]:
    """Feed ``inputs`` (a list for ordinal 0, or ordinal → list, lower ordinals first), then
    complete; return what the processor emitted on ordinal 0, in order."""
    by_ordinal = dict(inputs) if isinstance(inputs, Mapping) else {0: list(inputs)}
    outbox = ListOutbox(1, capacity)
    processor.init(outbox, context or ProcessorContext("test"))
    out: list[Any] = []
    calls = 0
    for ordinal in sorted(by_ordinal):
        inbox = Inbox(by_ordinal[ordinal])
        while inbox:
            processor.process(ordinal, inbox)
            out.extend(outbox.drain())
            calls += 1
            if calls > _MAX_CALLS:
                raise RuntimeError("the processor makes no progress on its inbox")
        while not processor.complete_edge(ordinal):
            out.extend(outbox.drain())
    while not processor.complete():
        out.extend(outbox.drain())
        calls += 1
        if calls > _MAX_CALLS:
            raise RuntimeError("complete() never returns True")
    out.extend(outbox.drain())
    return out
