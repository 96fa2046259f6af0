"""The column cache: numpy columns of each map, per partition, for query fragments.

Decoding a map's MsgPack values on every query costs a microsecond per record; aggregating a
numpy column costs a nanosecond. So a node keeps, per map and per partition, a *chunk*: the
record keys, the raw values (for queries that return whole records), TTL expiry times, and one
column per field (numbers as float64, strings and other scalars dictionary-encoded against one
dictionary per map and field, so that the chunks of a scan concatenate without re-encoding).

Chunks are built lazily — a partition's first query decodes its values once and builds every
top-level field; a dotted path is built on first use — and kept current by writes: each chunk
remembers the partition's change sequence (``PartitionStore.seqs``) it reflects, and a scan
that finds the partition moved on patches the chunk with the records changed since
(``changes_since``: only those are decoded) into a new chunk, or rebuilds it when patching does
not pay or cannot express the change (OR maps, many changes, a new field, a value of a kind the
column cannot hold). Records are read through the store's documented read API, never its dicts.

A scan works on a *snapshot*: the chunks of its partitions concatenated once per field and
reused for as long as none of those partitions changed, so a warm scan hands out slices (numpy
views) and copies nothing. A cold scan first rebuilds the changed partitions one by one and gives
the event loop a turn after each, so a node never stalls its writes for a whole map's decode.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from libs.dag import (
    TAG_COLUMN,
    VALUE_COLUMN,
    Batch,
    Column,
    DictColumn,
    NumColumn,
    ObjColumn,
    build_column,
)
from libs.dag.batch import concat_columns, missing_column
from libs.dag.values import MISSING, hash_key
from services.storage.partition_store import MAP_KIND_LWW, PUT, PartitionStore

_INF = math.inf
PUT_KIND = PUT
MAX_SNAPSHOTS = 4  # partition sets per map whose concatenated columns are kept


class FieldDictionary:
    """The distinct values of one field of one map, in first-seen order; codes never change."""

    __slots__ = ("_index", "_snapshot", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}
        self._snapshot: npt.NDArray[np.object_] | None = None

    def encode(self, col: DictColumn) -> DictColumn:
        """``col`` re-coded against this dictionary (which learns its new values)."""
        remap = np.empty(len(col.dictionary) + 1, dtype=np.int32)
        remap[-1] = -1
        index = self._index
        for i, v in enumerate(col.dictionary):
            k = hash_key(v)
            code = index.get(k)
            if code is None:
                code = index[k] = len(self.values)
                self.values.append(v)
                self._snapshot = None
            remap[i] = code
        return DictColumn(remap[col.codes], self.snapshot())

    def snapshot(self) -> npt.NDArray[np.object_]:
        """The dictionary as an array; the same object until a new value arrives."""
        if self._snapshot is None:
            arr = np.empty(len(self.values), dtype=object)
            arr[:] = self.values
            self._snapshot = arr
        return self._snapshot


@dataclass(slots=True)
class Chunk:
    """One partition of one map, as columns."""

    seq: int
    keys: npt.NDArray[np.object_]
    values: npt.NDArray[np.object_]  # MsgPack bytes of each value
    tags: npt.NDArray[np.object_] | None  # OR-map tag of each row; None for an LWW map
    expires: npt.NDArray[np.float64] | None  # millis + ttl per row (inf = never); None = no TTLs
    columns: dict[str, Column] = field(default_factory=dict)
    all_top_level: bool = False  # every top-level field of every value is in ``columns``
    index: dict[str, int] | None = None  # key -> row, built on the first patch

    def __len__(self) -> int:
        return len(self.keys)

    def row_index(self) -> dict[str, int]:
        if self.index is None:
            self.index = {k: i for i, k in enumerate(self.keys.tolist())}
        return self.index


@dataclass(slots=True)
class MapColumns:
    chunks: dict[int, Chunk] = field(default_factory=dict)
    dictionaries: dict[str, FieldDictionary] = field(default_factory=dict)
    snapshots: collections.OrderedDict[tuple[int, ...], ScanSnapshot] = field(
        default_factory=collections.OrderedDict
    )


def _decode(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:
        return MISSING  # an undecodable value has no fields: it matches no field predicate


def _set_rows(col: Column, rows: npt.NDArray[np.int64], new: list[Any]) -> Column | None:
    """A copy of ``col`` with ``rows`` set to ``new``; None when the column's kind cannot hold
    one of the new values."""
    if not len(rows):
        return col
    if isinstance(col, NumColumn):
        nums = [v for v in new if v is not None and v is not MISSING]
        if any(type(v) is not int and type(v) is not float for v in nums):
            return None
        if any(type(v) is int and abs(v) >= 2**53 for v in nums):
            return None
        values, valid = col.values.copy(), col.valid.copy()
        nulls = col.nulls.copy() if col.nulls is not None else None
        is_num = np.array([v is not None and v is not MISSING for v in new], dtype=bool)
        is_null = np.array([v is None for v in new], dtype=bool)
        values[rows] = [v if ok else 0.0 for v, ok in zip(new, is_num, strict=True)]
        valid[rows] = is_num
        if is_null.any() and nulls is None:
            nulls = np.zeros(len(col), dtype=bool)
        if nulls is not None:
            nulls[rows] = is_null
        integral = col.integral and all(type(v) is int for v in nums)
        return NumColumn(values, valid, integral, nulls)
    if isinstance(col, DictColumn):
        built = build_column(new)
        if isinstance(built, ObjColumn):
            return None  # a list or a map where the column holds scalars
        fresh = built.to_dict_column() if isinstance(built, NumColumn) else built
        merged = concat_columns([DictColumn(col.codes, col.dictionary), fresh])
        if not isinstance(merged, DictColumn):
            return None
        codes = merged.codes[: len(col)].copy()
        codes[rows] = merged.codes[len(col) :]
        return DictColumn(codes, merged.dictionary)
    objects = col.values.copy()
    objects[rows] = new
    return ObjColumn(objects)


def decode_all(raws: list[bytes]) -> list[Any]:
    """Every value decoded; one streaming unpack when the values are well formed (checked by
    offsets), one by one otherwise."""
    if not raws:
        return []
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
    unpacker.feed(b"".join(raws))
    out: list[Any] = []
    end = 0
    try:
        for raw in raws:
            out.append(unpacker.unpack())
            end += len(raw)
            if unpacker.tell() != end:
                raise ValueError("value boundaries do not match")
    except Exception:
        return [_decode(r) for r in raws]
    return out


def top_level_fields(decoded: list[Any]) -> dict[str, list[Any]]:
    """Field name -> one value per record (MISSING where absent) over decoded values."""
    if decoded and set(map(type, decoded)) == {dict}:
        names = [k for k in dict.fromkeys(itertools.chain.from_iterable(decoded)) if type(k) is str]
        try:  # uniform records (every value has every field): one C-level pass per field
            return {n: list(map(operator.itemgetter(n), decoded)) for n in names}
        except KeyError:
            pass
    else:
        seen: dict[Any, None] = {}
        for v in decoded:
            if type(v) is dict:
                seen.update(dict.fromkeys(v))
        names = [k for k in seen if type(k) is str]
    return {n: [v.get(n, MISSING) if type(v) is dict else MISSING for v in decoded] for n in names}


def _get_path(value: Any, path: Sequence[str]) -> Any:
    cur = value
    for seg in path:
        if not isinstance(cur, dict):
            return MISSING
        cur = cur.get(seg, MISSING)
        if cur is MISSING:
            return MISSING
    return cur


class ColumnCache:
    """Column chunks of every map this node holds, built and refreshed on demand."""

    def __init__(self, store: PartitionStore) -> None:
        self.store = store
        self.maps: dict[str, MapColumns] = {}
        self.chunks_built = 0
        self.rows_decoded = 0
        self.rows_patched = 0

    def _map(self, name: str) -> MapColumns:
        m = self.maps.get(name)
        if m is None:
            m = self.maps[name] = MapColumns()
        return m

    def _store_column(self, m: MapColumns, name: str, col: Column) -> Column:
        if isinstance(col, DictColumn):
            d = m.dictionaries.get(name)
            if d is None:
                d = m.dictionaries[name] = FieldDictionary()
            return d.encode(col)
        return col

    def chunk(self, map_name: str, partition: int) -> Chunk:
        """The chunk of a partition, rebuilt first if the partition changed since."""
        m = self._map(map_name)
        seq = self.store.seqs[partition]
        ch = m.chunks.get(partition)
        if ch is not None and ch.seq == seq:
            return ch
        if ch is not None and ch.tags is None:
            patched = self._patch(m, map_name, partition, ch, seq)
            if patched is not None:
                m.chunks[partition] = patched
                return patched
        rows = list(self.store.iter_records(map_name, (partition,)))
        keys = [r[1] for r in rows]
        raws = [r[3].value for r in rows]
        tags = [r[2] for r in rows] if any(r[2] for r in rows) else None
        has_ttl = any(r[3].ttl_ms for r in rows)
        expires = (
            [float(r[3].millis + r[3].ttl_ms) if r[3].ttl_ms else _INF for r in rows]
            if has_ttl
            else []
        )
        n = len(keys)
        key_arr = np.empty(n, dtype=object)
        key_arr[:] = keys
        raw_arr = np.empty(n, dtype=object)
        raw_arr[:] = raws
        tag_arr = None
        if tags is not None:
            tag_arr = np.empty(n, dtype=object)
            tag_arr[:] = tags
        ch = Chunk(seq, key_arr, raw_arr, tag_arr, np.asarray(expires) if has_ttl else None)
        decoded = decode_all(raws)
        self._build_columns(m, ch, decoded, None)
        ch.all_top_level = True
        m.chunks[partition] = ch
        self.chunks_built += 1
        self.rows_decoded += n
        return ch

    def _patch(
        self, m: MapColumns, map_name: str, partition: int, ch: Chunk, seq: int
    ) -> Chunk | None:
        """The chunk with the partition's changes since it was built applied (a new chunk:
        batches handed out earlier keep seeing the old arrays); None when a rebuild is due (an
        OR map, many changes, a value a column cannot hold, a field never seen)."""
        if self.store.map_kind(map_name) != MAP_KIND_LWW or not ch.all_top_level:
            return None
        changes = self.store.changes_since([map_name], (partition,), {partition: ch.seq})
        if len(changes) == 0:  # the partition moved on for other maps only
            return dataclasses.replace(ch, seq=seq)
        if len(changes) > max(64, len(ch) // 4):
            return None
        index = ch.row_index()
        updated: dict[int, tuple[bytes, Any, float]] = {}
        appended: dict[str, tuple[bytes, Any, float]] = {}
        removed: set[int] = set()
        for key, kind, raw, ttl, millis in zip(
            changes.keys,
            changes.kinds,
            changes.values,
            changes.ttl_ms,
            changes.millis,
            strict=True,
        ):
            row = index.get(key)
            if kind == PUT_KIND:
                item = (raw, _decode(raw), float(millis + ttl) if ttl else _INF)
                if row is not None:
                    updated[row] = item
                    removed.discard(row)
                else:
                    appended[key] = item
            elif row is not None:
                removed.add(row)
                updated.pop(row, None)
            else:
                appended.pop(key, None)
        items = list(updated.values()) + list(appended.values())
        names = set(ch.columns)
        for _, value, _ in items:
            if type(value) is not dict or not names.issuperset(k for k in value if type(k) is str):
                return None  # a field the chunk has no column for, or a value with no fields
        rows = np.fromiter(updated, np.int64, len(updated))
        keep = np.ones(len(ch), dtype=bool)
        keep[list(removed)] = False
        columns: dict[str, Column] = {}
        for name, col in ch.columns.items():
            if "." in name:
                continue  # a dotted path: rebuilt on next use
            new = [v.get(name, MISSING) for _, v, _ in updated.values()]
            tail = [v.get(name, MISSING) for _, v, _ in appended.values()]
            patched_col = _set_rows(col, rows, new)
            if patched_col is None:
                return None
            merged = (
                concat_columns([patched_col.take(keep), build_column(tail)])
                if tail
                else (patched_col.take(keep))
            )
            columns[name] = self._store_column(m, name, merged)
        values = ch.values.copy()
        values[rows] = [raw for raw, _, _ in updated.values()]
        keys = ch.keys[keep]
        values = values[keep]
        expires = ch.expires
        if expires is not None or any(e != _INF for _, _, e in items):
            base = expires.copy() if expires is not None else np.full(len(ch), _INF)
            base[rows] = [e for _, _, e in updated.values()]
            expires = base[keep]
        if appended:
            extra_keys = np.empty(len(appended), dtype=object)
            extra_keys[:] = list(appended)
            extra_values = np.empty(len(appended), dtype=object)
            extra_values[:] = [raw for raw, _, _ in appended.values()]
            keys = np.concatenate([keys, extra_keys])
            values = np.concatenate([values, extra_values])
            if expires is not None:
                expires = np.concatenate([expires, [e for _, _, e in appended.values()]])
        self.rows_patched += len(items) + len(removed)
        return Chunk(seq, keys, values, None, expires, columns, True)

    def _build_columns(
        self, m: MapColumns, ch: Chunk, decoded: list[Any], paths: Sequence[str] | None
    ) -> None:
        if paths is None:
            for name, values in top_level_fields(decoded).items():
                ch.columns[name] = self._store_column(m, name, build_column(values))
            return
        for name in paths:
            path = name.split(".")
            col = build_column([_get_path(v, path) for v in decoded])
            ch.columns[name] = self._store_column(m, name, col)

    def column(self, map_name: str, ch: Chunk, name: str) -> Column:
        """One field of a chunk (a dot path or ``VALUE_COLUMN``)."""
        if name == VALUE_COLUMN:
            return ObjColumn(ch.values)
        if name == TAG_COLUMN:
            tags = ch.tags if ch.tags is not None else np.full(len(ch), "", dtype=object)
            return ObjColumn(tags)
        col = ch.columns.get(name)
        if col is not None:
            return col
        if "." not in name and ch.all_top_level:
            return missing_column(len(ch))
        decoded = [_decode(r) for r in ch.values]
        self.rows_decoded += len(decoded)
        self._build_columns(self._map(map_name), ch, decoded, [name])
        return ch.columns[name]

    def dirty(self, map_name: str, partition: int) -> bool:
        ch = self._map(map_name).chunks.get(partition)
        return ch is None or ch.seq != self.store.seqs[partition]

    def snapshot(self, map_name: str, partitions: Sequence[int]) -> ScanSnapshot:
        """The partitions' chunks as one set of columns, reused while none of them changed."""
        m = self._map(map_name)
        key = tuple(partitions)
        seqs = np.fromiter((self.store.seqs[p] for p in key), np.int64, len(key))
        snap = m.snapshots.get(key)
        if snap is not None and np.array_equal(snap.seqs, seqs):
            m.snapshots.move_to_end(key)
            return snap
        chunks = [self.chunk(map_name, p) for p in key]
        snap = ScanSnapshot(self, map_name, [c for c in chunks if len(c)], seqs)
        m.snapshots[key] = snap
        while len(m.snapshots) > MAX_SNAPSHOTS:
            m.snapshots.popitem(last=False)
        return snap

    def source(self, map_name: str, partitions: Sequence[int], now_ms: int) -> CachedMapSource:
        return CachedMapSource(self, map_name, list(partitions), now_ms)


class ScanSnapshot:
    """The chunks of a set of partitions concatenated: keys, expiry, and (built on first use)
    one column per field. Valid while every partition is at the sequence it was built at."""

    def __init__(self, cache: ColumnCache, map_name: str, chunks: list[Chunk], seqs: Any) -> None:
        self.cache = cache
        self.map_name = map_name
        self.chunks = chunks
        self.seqs = seqs
        n = sum(len(c) for c in chunks)
        self.rows = n
        if chunks:
            self.keys = np.concatenate([c.keys for c in chunks])
        else:
            self.keys = np.empty(0, dtype=object)
        self.expires: npt.NDArray[np.float64] | None = None
        if any(c.expires is not None for c in chunks):
            self.expires = np.concatenate(
                [c.expires if c.expires is not None else np.full(len(c), _INF) for c in chunks]
            )
        self._columns: dict[str, Column] = {}

    def column(self, name: str) -> Column:
        col = self._columns.get(name)
        if col is None:
            col = self._columns[name] = self._concat(name)
        return col

    def _concat(self, name: str) -> Column:
        if not self.chunks:
            return missing_column(0)
        cols = [self.cache.column(self.map_name, ch, name) for ch in self.chunks]
        if len(cols) == 1:
            return cols[0]

        def absent(c: Column) -> bool:
            return isinstance(c, DictColumn) and not len(c.dictionary)

        if any(isinstance(c, NumColumn) for c in cols) and all(
            isinstance(c, NumColumn) or absent(c) for c in cols
        ):
            nums = [
                c
                if isinstance(c, NumColumn)
                else NumColumn(np.zeros(len(c)), np.zeros(len(c), dtype=bool), True)
                for c in cols
            ]
            return concat_columns(nums)
        d = self.cache.maps[self.map_name].dictionaries.get(name)
        if all(isinstance(c, DictColumn) for c in cols) and (
            d is not None or all(absent(c) for c in cols)
        ):
            codes = np.concatenate([c.codes for c in cols])  # type: ignore[union-attr]
            dictionary = d.snapshot() if d is not None else cols[0].dictionary  # type: ignore[union-attr]
            return DictColumn(codes, dictionary)
        return concat_columns(cols)


class CachedMapSource:
    """A ``libs.dag`` column source over some partitions of a map, through the cache.

    A warm scan hands out slices (views) of the snapshot's columns; a cold one first rebuilds
    the changed partitions one by one, giving the event loop a turn after each.
    """

    def __init__(self, cache: ColumnCache, map_name: str, partitions: list[int], now_ms: int):
        self.cache = cache
        self.map_name = map_name
        self.partitions = partitions
        self.now_ms = now_ms
        self.rows_scanned = 0

    def scan(self, fields: Sequence[str], *, batch_rows: int = 131_072) -> Iterator[Batch | None]:
        for p in self.partitions:
            if self.cache.dirty(self.map_name, p):
                self.cache.chunk(self.map_name, p)
                yield None
        snap = self.cache.snapshot(self.map_name, self.partitions)
        if not snap.rows:
            return
        batch = Batch(snap.keys, {f: snap.column(f) for f in fields})
        self.rows_scanned += len(batch)
        if snap.expires is not None:
            live = snap.expires >= self.now_ms
            if not live.all():
                batch = batch.take(np.flatnonzero(live))
        n = len(batch)
        # equal slices of about batch_rows each (the last one is not a sliver)
        parts = max(1, round(n / batch_rows))
        bounds = np.linspace(0, n, parts + 1).astype(int)
        for lo, hi in itertools.pairwise(bounds.tolist()):
            if hi > lo:
                yield batch if (lo == 0 and hi == n) else batch.take(slice(lo, hi))
