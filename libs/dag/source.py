"""Sources: processors with no input that emit batches from a map's records.

A :class:`ColumnSource` is anything that can hand out a map's records as column batches — the
storage node's column cache over its local partitions, or :class:`RecordsSource` over a list in
memory. :class:`SourceP` pushes the predicate and the projection down into the scan: it asks
only for the columns it needs, drops filtered-out rows before they leave the source, and keeps
only the requested columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import msgpack

from libs.dag.batch import VALUE_COLUMN, Batch, build_column, no_keys
from libs.dag.predicate import BatchFilter, keep
from libs.dag.processor import BaseProcessor, Outbox, ProcessorContext
from libs.dag.values import MISSING

DEFAULT_BATCH_ROWS = 131_072


class ColumnSource(Protocol):
    """A map's records as column batches."""

    def scan(self, fields: Sequence[str], *, batch_rows: int) -> Iterator[Batch | None]:
        """Batches of about ``batch_rows`` rows holding the named columns (dot paths, or
        ``VALUE_COLUMN`` for each record's whole value as MsgPack bytes). A source may yield
        ``None`` between batches when it wants to give the event loop a turn (a long build)."""
        ...


def _get_path(value: Any, path: Sequence[str]) -> Any:
    cur = value
    for seg in path:
        if not isinstance(cur, dict):
            return MISSING
        cur = cur.get(seg, MISSING)
        if cur is MISSING:
            return MISSING
    return cur


def columns_of(
    keys: Sequence[str],
    values: Sequence[Any],
    fields: Sequence[str],
    packed: Sequence[bytes] | None = None,
) -> Batch:
    """A batch of the named columns (dot paths, or ``VALUE_COLUMN``) from decoded values."""
    cols = {}
    for name in fields:
        if name == VALUE_COLUMN:
            raw = (
                packed
                if packed is not None
                else [msgpack.packb(v, use_bin_type=True) for v in values]
            )
            cols[name] = build_column(list(raw))
            continue
        path = name.split(".")
        if len(path) == 1:
            cols[name] = build_column(
                [v.get(name, MISSING) if isinstance(v, dict) else MISSING for v in values]
            )
        else:
            cols[name] = build_column([_get_path(v, path) for v in values])
    return Batch.from_columns(keys, {}).with_columns(cols)


class RecordsSource:
    """A :class:`ColumnSource` over ``(key, decoded value)`` pairs held in memory."""

    def __init__(self, records: Iterable[tuple[str, Any]]) -> None:
        self.records = list(records)

    def scan(
        self, fields: Sequence[str], *, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[Batch]:
        for start in range(0, len(self.records), batch_rows):
            chunk = self.records[start : start + batch_rows]
            yield columns_of([k for k, _ in chunk], [v for _, v in chunk], fields)


class BatchesSource:
    """A :class:`ColumnSource` replaying prepared batches (columns it lacks read as missing)."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self.batches = list(batches)

    def scan(
        self, fields: Sequence[str], *, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[Batch]:
        for b in self.batches:
            yield b.select(fields)


class SourceP(BaseProcessor):
    """Scan a :class:`ColumnSource` with the filter and projection pushed down.

    ``keys=False`` emits placeholder keys: for plans that aggregate, where copying the record
    keys of every filtered row would cost more than the aggregation itself."""

    def __init__(
        self,
        source: ColumnSource,
        fields: Sequence[str],
        filter: BatchFilter | None = None,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        keys: bool = True,
    ) -> None:
        super().__init__()
        self.source = source
        self.keys = keys
        self.fields = tuple(dict.fromkeys(fields))
        self.filter = filter
        self.batch_rows = batch_rows
        self.rows_scanned = 0
        self._scan: Iterator[Batch | None] | None = None
        self._waiting: Batch | None = None

    def init(self, outbox: Outbox, context: ProcessorContext) -> None:
        super().init(outbox, context)
        read = dict.fromkeys(self.fields)
        if self.filter is not None:
            read.update(dict.fromkeys(self.filter.fields))
        self._read = tuple(read)
        self._extra = set(self._read) - set(self.fields)

    def _batches(self) -> Iterator[Batch | None]:
        for b in self.source.scan(self._read, batch_rows=self.batch_rows):
            if b is None:
                yield None  # the source wants the event loop back for a moment
                continue
            self.rows_scanned += len(b)
            drop_keys = not self.keys
            if drop_keys and (self.filter is None or not self.filter.uses_keys):
                b, drop_keys = Batch(no_keys(len(b)), b.columns), False
            if self.filter is not None:
                b = keep(b, self.filter(b))
            if drop_keys:
                b = Batch(no_keys(len(b)), b.columns)
            if self._extra:
                b = b.without(self._extra)
            if len(b):
                yield b

    def complete(self) -> bool:
        if self._scan is None:
            self._scan = self._batches()
        if self._waiting is not None:
            if not self.outbox.offer(self._waiting):
                return False
            self._waiting = None
        for b in self._scan:
            if b is None:
                return False
            if not self.outbox.offer(b):
                self._waiting = b
                return False
        return True
