"""Sort, TopN and Limit over column batches.

The order is libs.query's (``sorting.sort_key``): per sort field, numbers < NaN < strings <
booleans < other values < null/missing, reversed as a whole for ``desc``; the record key
ascending breaks ties. Here each field becomes integer/float rank arrays and the rows are
ordered with one ``np.lexsort``; values of dictionary columns are ranked once per distinct
value. TopN first keeps only rows that can still make the top ``n`` on the leading sort field
(``np.partition``), so a top-100 over a large batch sorts a few hundred rows, not all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from libs.dag.batch import Batch, Column, DictColumn, NumColumn, concat_batches
from libs.dag.processor import BaseProcessor, Inbox
from libs.dag.values import MISSING
from libs.query.sorting import rank

KEY_FIELD = "_key"
_NUMBER, _NAN, _NULL = 0, 1, 5
Ranks = list[npt.NDArray[np.float64] | npt.NDArray[np.int64]]


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool = False


def _dense_ranks(values: Sequence[object]) -> npt.NDArray[np.int64]:
    """Dense ascending ranks of Python values under ``libs.query.sorting.rank`` (ties equal)."""
    keyed = [rank(v) for v in values]
    order = sorted(range(len(keyed)), key=keyed.__getitem__)
    out = np.empty(len(keyed), dtype=np.int64)
    r = -1
    prev: object = object()
    for i in order:
        if keyed[i] != prev:
            r += 1
            prev = keyed[i]
        out[i] = r
    return out


def field_ranks(batch: Batch, key: SortKey) -> Ranks:
    """Arrays, most significant first, ordering the rows by one sort field (asc or desc)."""
    col: Column
    if key.field == KEY_FIELD:
        col = DictColumn(np.arange(len(batch), dtype=np.int32), batch.keys)
    else:
        col = batch.column(key.field)
    sign = -1 if key.descending else 1
    if isinstance(col, NumColumn):
        isnan = np.isnan(col.values)
        kind = np.where(col.valid, np.where(isnan, _NAN, _NUMBER), _NULL).astype(np.int64)
        vals = np.where(col.valid & ~isnan, col.values, 0.0)
        return [sign * kind, sign * vals]
    if isinstance(col, DictColumn):
        d = list(col.dictionary)
        d.append(None)  # code -1 (missing) ranks as null
        per_value = _dense_ranks(d)
        return [sign * per_value[col.codes]]
    return [sign * _dense_ranks([None if v is MISSING else v for v in col.to_objects()])]


def sort_order(batch: Batch, keys: Sequence[SortKey]) -> npt.NDArray[np.intp]:
    """Row indices of ``batch`` in sort order (ties broken by record key ascending)."""
    n = len(batch)
    if n <= 1:
        return np.arange(n)
    lex: Ranks = []
    for k in keys:
        lex.extend(field_ranks(batch, k))
    record_keys = batch.keys.astype(str)
    # np.lexsort sorts by the last array first
    return np.lexsort([record_keys, *reversed(lex)])


def _candidates(batch: Batch, keys: Sequence[SortKey], n: int) -> npt.NDArray[np.intp] | None:
    """Rows that can be in the top ``n`` judging by the leading field (None = all of them)."""
    if not keys or len(batch) <= 4 * n + 64:
        return None
    lead = field_ranks(batch, keys[0])
    primary = lead[0].astype(np.float64)
    if len(lead) > 1:  # numeric: fold kind and value into one float while keeping the order
        kind, vals = lead
        finite = np.isfinite(vals)
        if not finite.all():
            return None
        span = float(np.abs(vals).max(initial=0.0)) * 2 + 1
        primary = kind.astype(np.float64) * span + vals
        if not np.isfinite(primary).all():
            return None
    threshold = np.partition(primary, n - 1)[n - 1]
    return np.flatnonzero(primary <= threshold)


def top_n(batch: Batch, keys: Sequence[SortKey], n: int) -> Batch:
    """The first ``n`` rows of ``batch`` in sort order, sorted."""
    if n <= 0:
        return batch.take(np.arange(0))
    cand = _candidates(batch, keys, n)
    if cand is not None:
        batch = batch.take(cand)
    order = sort_order(batch, keys)
    return batch.take(order[:n])


class SortP(BaseProcessor):
    """Gather every batch, sort once in ``complete()``, emit in chunks."""

    def __init__(self, keys: Sequence[SortKey], chunk_rows: int = 65_536) -> None:
        super().__init__()
        self.keys = tuple(keys)
        self.chunk_rows = chunk_rows
        self._batches: list[Batch] = []
        self._sorted = False

    def process(self, ordinal: int, inbox: Inbox) -> None:
        while inbox:
            self._batches.append(inbox.popleft())

    def complete(self) -> bool:
        if not self._sorted:
            self._sorted = True
            all_rows = concat_batches(self._batches)
            self._batches = []
            ordered = all_rows.take(sort_order(all_rows, self.keys))
            chunks = (
                ordered.take(slice(i, i + self.chunk_rows))
                for i in range(0, len(ordered), self.chunk_rows)
            )
            return self.emit_from(chunks)
        return self.emit_from()


class TopNP(BaseProcessor):
    """Keep the best ``n`` rows seen so far; emit them sorted in ``complete()``."""

    def __init__(self, keys: Sequence[SortKey], n: int) -> None:
        super().__init__()
        self.keys = tuple(keys)
        self.n = n
        self._best: Batch | None = None
        self._queued: list[Batch] = []
        self._queued_rows = 0
        self._done = False

    def _fold(self) -> None:
        # cut each batch to its own top n first: the concatenation then copies few rows
        parts = [top_n(b, self.keys, self.n) if len(b) > self.n else b for b in self._queued]
        if self._best is not None:
            parts.append(self._best)
        self._queued, self._queued_rows = [], 0
        if parts:
            self._best = top_n(concat_batches(parts), self.keys, self.n)

    def process(self, ordinal: int, inbox: Inbox) -> None:
        while inbox:
            b: Batch = inbox.popleft()
            if len(b):
                self._queued.append(b)
                self._queued_rows += len(b)
            if self._queued_rows >= max(4 * self.n, 65_536):
                self._fold()

    def complete(self) -> bool:
        if not self._done:
            self._done = True
            self._fold()
            best = self._best
            self._best = None
            return self.emit_from(iter([best]) if best is not None and len(best) else iter(()))
        return self.emit_from()


class LimitP(BaseProcessor):
    """Pass the first ``n`` rows (after skipping ``offset``), drop the rest."""

    def __init__(self, n: int, offset: int = 0) -> None:
        super().__init__()
        self.n = n
        self.offset = offset
        self._seen = 0

    def process(self, ordinal: int, inbox: Inbox) -> None:
        if self.emitting and not self.emit_from():
            return
        while inbox:
            b: Batch = inbox.popleft()
            start, stop = self._seen, self._seen + len(b)
            self._seen = stop
            lo = max(self.offset - start, 0)
            hi = min(self.offset + self.n - start, len(b))
            if hi <= lo:
                continue
            out = b if (lo == 0 and hi == len(b)) else b.take(slice(lo, hi))
            if not self.outbox.offer(out):
                self.emit_from(iter([out]))
                return
