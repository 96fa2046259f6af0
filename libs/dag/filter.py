"""Filter: keep the rows of each batch that a compiled predicate accepts."""

from __future__ import annotations

from libs.dag.batch import Batch
from libs.dag.predicate import BatchFilter, keep
from libs.dag.processor import BaseProcessor, Inbox


class FilterP(BaseProcessor):
    def __init__(self, filter: BatchFilter) -> None:
        super().__init__()
        self.filter = filter

    def process(self, ordinal: int, inbox: Inbox) -> None:
        while inbox:
            if self.emitting and not self.emit_from():
                return
            batch: Batch = inbox.popleft()
            out = keep(batch, self.filter(batch))
            if len(out) and not self.outbox.offer(out):
                self.emit_from(iter([out]))
                return
        self.emit_from()
