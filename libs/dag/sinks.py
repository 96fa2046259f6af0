"""Sinks: where a DAG's rows end up.

``CollectSinkP`` appends every batch to a list the caller holds (tests, in-process jobs).
``ForwardP`` passes batches through unchanged; wired to an output port it streams a DAG's result
to whoever iterates the port — the gRPC servicer that answers a caller, batch by batch, under the
same back-pressure as every other edge. ``DiscardP`` drops everything (benchmarks).
"""

from __future__ import annotations

from typing import Any

from libs.dag.processor import BaseProcessor, Inbox


class CollectSinkP(BaseProcessor):
    def __init__(self, into: list[Any]) -> None:
        super().__init__()
        self.into = into

    def process(self, ordinal: int, inbox: Inbox) -> None:
        while inbox:
            self.into.append(inbox.popleft())


class ForwardP(BaseProcessor):
    def process(self, ordinal: int, inbox: Inbox) -> None:
        while inbox:
            if not self.outbox.offer(inbox[0]):
                return
            inbox.popleft()


class DiscardP(BaseProcessor):
    def process(self, ordinal: int, inbox: Inbox) -> None:
        inbox.clear()
