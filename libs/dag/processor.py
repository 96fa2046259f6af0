"""The processor contract, after Hazelcast Jet's ``Processor``.

The executor drives each processor instance from one task and calls, never concurrently:

* ``init(outbox, context)`` once;
* ``process(ordinal, inbox)`` with the items that arrived on one inbound ordinal. The processor
  removes an item from the inbox only once it has fully dealt with it, and may return early
  (typically because ``outbox.offer`` refused an item); it is then called again with what is
  left;
* ``complete_edge(ordinal)`` once an inbound ordinal is exhausted, until it returns True;
* ``complete()`` once every inbound ordinal is exhausted, until it returns True. A processor
  with no inputs (a source) does all its work here. An accumulating processor emits its result
  here.

``outbox.offer`` returns False when the downstream queue is full: the processor keeps its state
and returns, the executor waits until the queue drains and calls again. That is the whole of
back-pressure: no processor blocks the event loop and nothing buffers without limit.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class Inbox(collections.deque[Any]):
    """Items waiting for one ``process`` call; the processor removes what it has handled."""

    def peek(self) -> Any:
        return self[0] if self else None

    def poll(self) -> Any:
        return self.popleft() if self else None


@runtime_checkable
class Outbox(Protocol):
    """Where a processor puts its output. ``offer`` never blocks: False means "full, retry later"."""

    @property
    def bucket_count(self) -> int: ...

    def offer(self, item: Any, ordinal: int | None = None) -> bool:
        """Put ``item`` on ``ordinal`` (every ordinal when None); False if it has no room."""
        ...

    def has_room(self, ordinal: int | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class ProcessorContext:
    vertex: str
    instance: int = 0  # 0 .. parallelism-1
    parallelism: int = 1
    job: str = ""


class Processor(Protocol):
    def init(self, outbox: Outbox, context: ProcessorContext) -> None: ...

    def process(self, ordinal: int, inbox: Inbox) -> None: ...

    def complete_edge(self, ordinal: int) -> bool: ...

    def complete(self) -> bool: ...


class BaseProcessor:
    """Defaults for the contract plus helpers to emit under back-pressure.

    ``emit_from(iterator)`` keeps the item the outbox refused and the rest of the iterator, so a
    later call resumes exactly where the previous one stopped (Jet's ``emitFromTraverser``).
    """

    outbox: Outbox
    context: ProcessorContext

    def __init__(self) -> None:
        self._pending: Iterator[Any] | None = None
        self._held: Any = None
        self._has_held = False

    def init(self, outbox: Outbox, context: ProcessorContext) -> None:
        self.outbox = outbox
        self.context = context

    def process(self, ordinal: int, inbox: Inbox) -> None:
        raise NotImplementedError(f"{type(self).__name__} takes no input")

    def complete_edge(self, ordinal: int) -> bool:
        return True

    def complete(self) -> bool:
        return self.emit_from()  # anything still held from process() goes out first

    def emit_from(self, items: Iterator[Any] | None = None, ordinal: int | None = None) -> bool:
        """Offer items from ``items`` (or the one left over from the previous call) until the
        outbox refuses one; True once every item is out."""
        if items is not None:
            if self._pending is not None or self._has_held:
                raise RuntimeError("emit_from called with a new iterator before the last finished")
            self._pending = items
        if self._has_held:
            if not self.outbox.offer(self._held, ordinal):
                return False
            self._held, self._has_held = None, False
        if self._pending is None:
            return True
        for item in self._pending:
            if not self.outbox.offer(item, ordinal):
                self._held, self._has_held = item, True
                return False
        self._pending = None
        return True

    @property
    def emitting(self) -> bool:
        return self._pending is not None or self._has_held
