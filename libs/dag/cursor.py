"""After: keep only the rows that sort strictly after a cursor position.

The position is a row known by its sort-field values and record key (a decoded QUERY_SUB
cursor). Each batch is ranked together with that one synthetic row, using the same order as
:mod:`libs.dag.sort`; rows ranked after it pass. A row equal to the position (same values and
key) is the cursor's own row and is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from libs.dag.batch import Batch, build_column, concat_batches
from libs.dag.processor import BaseProcessor, Inbox
from libs.dag.sort import KEY_FIELD, SortKey, sort_order


def rows_after(batch: Batch, keys: Sequence[SortKey], values: Sequence[Any], key: str) -> Batch:
    if not len(batch):
        return batch
    probe_cols = {
        k.field: build_column([v])
        for k, v in zip(keys, values, strict=True)
        if k.field != KEY_FIELD
    }
    probe = Batch(np.array([key], dtype=object), probe_cols)
    both = concat_batches([batch.select([k.field for k in keys if k.field != KEY_FIELD]), probe])
    order = sort_order(both, keys)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    after = position[: len(batch)] > position[len(batch)]
    if after.all():
        return batch
    return batch.take(np.flatnonzero(after))


class AfterP(BaseProcessor):
    def __init__(self, keys: Sequence[SortKey], values: Sequence[Any], key: str) -> None:
        super().__init__()
        if len(values) != len(keys):
            raise ValueError("a cursor position needs one value per sort field")
        self.keys = tuple(keys)
        self.values = tuple(values)
        self.key = key

    def process(self, ordinal: int, inbox: Inbox) -> None:
        if self.emitting and not self.emit_from():
            return
        while inbox:
            out = rows_after(inbox.popleft(), self.keys, self.values, self.key)
            if len(out) and not self.outbox.offer(out):
                self.emit_from(iter([out]))
                return
