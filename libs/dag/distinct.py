"""Distinct: the first row of every distinct combination of field values.

Values are compared with TopGun equality (``1`` and ``1.0`` are one value, ``true`` and ``1`` two);
a missing field counts as ``null``. Within a batch the combinations are found with one group-code
pass; only the distinct combinations of each batch touch the set of those already seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from libs.dag.aggregate import group_codes
from libs.dag.batch import Batch, DictColumn
from libs.dag.processor import BaseProcessor, Inbox
from libs.dag.values import deep_key

KEY_FIELD = "_key"


def _with_key_column(batch: Batch, fields: Sequence[str]) -> Batch:
    if KEY_FIELD not in fields:
        return batch
    return batch.with_columns(
        {KEY_FIELD: DictColumn(np.arange(len(batch), dtype=np.int32), batch.keys)}
    )


class DistinctP(BaseProcessor):
    def __init__(self, fields: Sequence[str]) -> None:
        super().__init__()
        if not fields:
            raise ValueError("distinct needs at least one field (use _key for the record key)")
        self.fields = tuple(fields)
        self._seen: set[tuple[Any, ...]] = set()

    def distinct_rows(self, batch: Batch) -> Batch:
        probe = _with_key_column(batch, self.fields)
        gid, values = group_codes(probe, self.fields)
        first = np.full(len(values), -1, dtype=np.int64)
        # the first row of each group: scatter in reverse so the lowest index wins
        idx = np.arange(len(batch))[::-1]
        first[gid[::-1]] = idx
        keep = []
        for g, vals in enumerate(values):
            k = tuple(deep_key(v) for v in vals)
            if k not in self._seen:
                self._seen.add(k)
                keep.append(first[g])
        keep.sort()
        return batch.take(np.asarray(keep, dtype=np.intp))

    def process(self, ordinal: int, inbox: Inbox) -> None:
        if self.emitting and not self.emit_from():
            return
        while inbox:
            out = self.distinct_rows(inbox.popleft())
            if len(out) and not self.outbox.offer(out):
                self.emit_from(iter([out]))
                return
