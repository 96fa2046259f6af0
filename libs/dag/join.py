"""HashJoin: an inner equi-join of two inputs on one field each.

Ordinal 0 is the build side and ordinal 1 the probe side; the build edge must have a lower
priority so it is consumed to the end first (Jet's hash-join shape). The build side is held in
memory, grouped by key value; each probe batch is matched per distinct key value and emitted as
one batch whose columns carry the two sides' prefixes (``left.price``, ``right.name``, and
``left._key``/``right._key`` for the record keys). ``null`` and missing keys never match.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from libs.dag.aggregate import _factorize
from libs.dag.batch import Batch, DictColumn, concat_batches
from libs.dag.processor import BaseProcessor, Inbox
from libs.dag.values import deep_key

Idx = npt.NDArray[np.intp]


def _groups(
    codes: npt.NDArray[np.int64],
) -> tuple[Idx, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes) if len(codes) else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
    return order, starts, counts


class HashJoinP(BaseProcessor):
    def __init__(
        self,
        left_on: str,
        right_on: str,
        left_prefix: str = "left.",
        right_prefix: str = "right.",
    ) -> None:
        super().__init__()
        self.left_on = left_on
        self.right_on = right_on
        self.left_prefix = left_prefix
        self.right_prefix = right_prefix
        self._build: list[Batch] = []
        self._table: dict[Any, Idx] | None = None
        self._left = Batch.empty()

    def _key_column(self, batch: Batch, name: str) -> Any:
        if name == "_key":
            return DictColumn(np.arange(len(batch), dtype=np.int32), batch.keys)
        return batch.column(name)

    def complete_edge(self, ordinal: int) -> bool:
        if ordinal == 0 and self._table is None:
            self._left = concat_batches(self._build)
            self._build = []
            codes, uniques = _factorize(self._key_column(self._left, self.left_on))
            order, starts, counts = _groups(codes)
            table: dict[Any, Idx] = {}
            for c, v in enumerate(uniques):
                if v is None or c >= len(counts) or counts[c] == 0:
                    continue
                table[deep_key(v)] = order[starts[c] : starts[c] + counts[c]]
            self._table = table
        return True

    def join(self, right: Batch) -> Batch:
        assert self._table is not None
        codes, uniques = _factorize(self._key_column(right, self.right_on))
        order, starts, counts = _groups(codes)
        lefts: list[Idx] = []
        rights: list[Idx] = []
        for c, v in enumerate(uniques):
            if v is None or c >= len(counts) or counts[c] == 0:
                continue
            match = self._table.get(deep_key(v))
            if match is None:
                continue
            probe = order[starts[c] : starts[c] + counts[c]]
            lefts.append(np.repeat(match, len(probe)))
            rights.append(np.tile(probe, len(match)))
        if not lefts:
            return Batch.empty()
        li = np.concatenate(lefts)
        ri = np.concatenate(rights)
        lb, rb = self._left.take(li), right.take(ri)
        keys = np.array([f"{a}|{b}" for a, b in zip(lb.keys, rb.keys, strict=True)], dtype=object)
        cols = {self.left_prefix + n: c for n, c in lb.columns.items()}
        cols.update({self.right_prefix + n: c for n, c in rb.columns.items()})
        cols[self.left_prefix + "_key"] = DictColumn(np.arange(len(lb), dtype=np.int32), lb.keys)
        cols[self.right_prefix + "_key"] = DictColumn(np.arange(len(rb), dtype=np.int32), rb.keys)
        return Batch(keys, cols)

    def process(self, ordinal: int, inbox: Inbox) -> None:
        if ordinal == 0:
            while inbox:
                self._build.append(inbox.popleft())
            return
        if self.emitting and not self.emit_from():
            return
        while inbox:
            out = self.join(inbox.popleft())
            if len(out) and not self.outbox.offer(out):
                self.emit_from(iter([out]))
                return
