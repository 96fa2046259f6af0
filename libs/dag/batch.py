"""Columnar batches: the items that flow along DAG edges.

A :class:`Batch` holds ``n`` rows as the record keys plus named columns. A column is one of

* :class:`NumColumn` — numbers (never booleans) as float64, with a mask of the rows that hold a
  number and an optional mask of explicit ``None`` values;
* :class:`DictColumn` — dictionary-encoded hashable values (strings, booleans, ``None``, numbers
  mixed with other kinds): int32 codes into a small array of distinct values, ``-1`` = missing;
* :class:`ObjColumn` — anything else (lists, maps), one Python object per row.

Rows where the field is absent are *missing* (:data:`MISSING` when read back), which is not the
same as an explicit ``None``. Numeric and dictionary columns are what make filters, group codes
and sums run as numpy operations instead of a loop over rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from libs.dag.values import MISSING, hash_key

F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]
Index: TypeAlias = "slice | npt.NDArray[np.intp] | npt.NDArray[np.int64] | Mask"

_MAX_SAFE = 2**53
VALUE_COLUMN = "__value"
"""Reserved column holding each record's whole value as MsgPack bytes (for row-returning plans)."""
TAG_COLUMN = "__tag"
"""Reserved column holding each row's OR-map tag (``""`` for LWW records), where a source has
tags: rows of an OR map are its live adds, so one key may have several rows."""


def _object_array(values: Sequence[Any] | Iterable[Any], n: int | None = None) -> Objects:
    if n is None:
        values = list(values)
        n = len(values)
    out = np.empty(n, dtype=object)
    if n:
        out[:] = values if isinstance(values, list) else list(values)
    return out


@dataclass(frozen=True, slots=True)
class NumColumn:
    values: F64  # the number where ``valid``, 0.0 elsewhere
    valid: Mask
    integral: bool = False  # every number came from an int: render back as int
    nulls: Mask | None = None  # explicit ``None`` rows (never valid)

    def __len__(self) -> int:
        return len(self.values)

    def take(self, index: Index) -> NumColumn:
        nulls = None if self.nulls is None else self.nulls[index]
        return NumColumn(self.values[index], self.valid[index], self.integral, nulls)

    def get(self, i: int) -> Any:
        if self.valid[i]:
            v = float(self.values[i])
            return int(v) if self.integral else v
        if self.nulls is not None and self.nulls[i]:
            return None
        return MISSING

    def to_objects(self) -> Objects:
        out = np.full(len(self), MISSING, dtype=object)
        if self.nulls is not None:
            out[self.nulls] = None
        vals = self.values[self.valid]
        out[self.valid] = vals.astype(np.int64).tolist() if self.integral else vals.tolist()
        return out

    def present(self) -> Mask:
        """Rows holding a value (``None`` included)."""
        return self.valid if self.nulls is None else self.valid | self.nulls

    def to_dict_column(self) -> DictColumn:
        uniq, inverse = np.unique(self.values[self.valid], return_inverse=True)
        dictionary = uniq.astype(np.int64).tolist() if self.integral else uniq.tolist()
        codes = np.full(len(self), -1, dtype=np.int32)
        codes[self.valid] = inverse.astype(np.int32)
        if self.nulls is not None and self.nulls.any():
            codes[self.nulls] = len(dictionary)
            dictionary.append(None)
        return DictColumn(codes, _object_array(dictionary))


@dataclass(frozen=True, slots=True)
class DictColumn:
    codes: I32  # index into ``dictionary``; -1 = missing
    dictionary: Objects  # distinct values, each hashable (no two equal under ``hash_key``)

    def __len__(self) -> int:
        return len(self.codes)

    def take(self, index: Index) -> DictColumn:
        return DictColumn(self.codes[index], self.dictionary)

    def get(self, i: int) -> Any:
        c = int(self.codes[i])
        return MISSING if c < 0 else self.dictionary[c]

    def to_objects(self) -> Objects:
        if len(self.dictionary) == 0:
            return np.full(len(self), MISSING, dtype=object)
        ext = np.empty(len(self.dictionary) + 1, dtype=object)
        ext[:-1] = self.dictionary
        ext[-1] = MISSING
        return ext[self.codes]  # -1 picks the trailing MISSING

    def present(self) -> Mask:
        return self.codes >= 0


@dataclass(frozen=True, slots=True)
class ObjColumn:
    values: Objects  # MISSING where absent

    def __len__(self) -> int:
        return len(self.values)

    def take(self, index: Index) -> ObjColumn:
        return ObjColumn(self.values[index])

    def get(self, i: int) -> Any:
        return self.values[i]

    def to_objects(self) -> Objects:
        return self.values

    def present(self) -> Mask:
        return np.fromiter((v is not MISSING for v in self.values), bool, len(self.values))


Column: TypeAlias = NumColumn | DictColumn | ObjColumn


_NO_KEYS: Objects = np.empty(0, dtype=object)


def no_keys(n: int) -> Objects:
    """``n`` placeholder keys (``None``), a view of one shared array: for batches whose record
    keys nobody downstream reads (aggregations), so filters and takes never copy real keys."""
    global _NO_KEYS
    if len(_NO_KEYS) < n:
        _NO_KEYS = np.empty(max(n, 2 * len(_NO_KEYS)), dtype=object)
    return _NO_KEYS[:n]


def _index_len(index: Index, n: int) -> int:
    if isinstance(index, slice):
        return len(range(*index.indices(n)))
    if index.dtype == np.bool_:
        return int(np.count_nonzero(index))
    return len(index)


def missing_column(n: int) -> DictColumn:
    return DictColumn(np.full(n, -1, dtype=np.int32), _object_array([]))


def build_column(values: Sequence[Any]) -> Column:
    """The tightest column for a list of Python values (:data:`MISSING` where absent)."""
    n = len(values)
    types = set(map(type, values))
    if types <= {int, float} and n:
        arr = np.asarray(values, dtype=np.float64)
        if float not in types and np.abs(arr).max(initial=0.0) >= _MAX_SAFE:
            return _dict_or_obj(values)
        return NumColumn(arr, np.ones(n, dtype=bool), float not in types)
    if (
        types
        and types <= {int, float, type(None), type(MISSING)}
        and (int in types or float in types)
    ):
        valid = np.fromiter((type(v) is int or type(v) is float for v in values), bool, n)
        arr = np.zeros(n, dtype=np.float64)
        nums = [v for v in values if type(v) is int or type(v) is float]
        arr[valid] = nums
        if np.abs(arr).max(initial=0.0) >= _MAX_SAFE and float not in types:
            return _dict_or_obj(values)
        nulls = None
        if type(None) in types:
            nulls = np.fromiter((v is None for v in values), bool, n)
        return NumColumn(arr, valid, float not in types, nulls)
    return _dict_or_obj(values)


def _dict_or_obj(values: Sequence[Any]) -> Column:
    kinds = set(map(type, values))
    if kinds <= {str, bool, type(MISSING)} and not (str in kinds and bool in kinds):
        # strings or booleans (and gaps): factorized with C-level dict and map loops
        uniq = dict.fromkeys(values)
        uniq.pop(MISSING, None)
        index: dict[Any, int] = {v: i for i, v in enumerate(uniq)}
        if type(MISSING) in kinds:
            index[MISSING] = -1
        codes = np.fromiter(map(index.__getitem__, values), np.int32, len(values))
        return DictColumn(codes, _object_array(list(uniq)))
    index = {}
    dictionary: list[Any] = []
    codes = np.empty(len(values), dtype=np.int32)
    try:
        for i, v in enumerate(values):
            if v is MISSING:
                codes[i] = -1
                continue
            k = hash_key(v)
            c = index.get(k)
            if c is None:
                c = index[k] = len(dictionary)
                dictionary.append(v)
            codes[i] = c
    except TypeError:  # unhashable (list, dict): keep the objects
        return ObjColumn(_object_array(values))
    return DictColumn(codes, _object_array(dictionary))


def concat_columns(columns: Sequence[Column]) -> Column:
    """One column holding the rows of ``columns`` in order, of the tightest common kind."""
    if len(columns) == 1:
        return columns[0]
    if all(isinstance(c, NumColumn) for c in columns):
        nums: list[NumColumn] = list(columns)  # type: ignore[arg-type]
        nulls = None
        if any(c.nulls is not None for c in nums):
            nulls = np.concatenate(
                [c.nulls if c.nulls is not None else np.zeros(len(c), dtype=bool) for c in nums]
            )
        return NumColumn(
            np.concatenate([c.values for c in nums]),
            np.concatenate([c.valid for c in nums]),
            all(c.integral for c in nums),
            nulls,
        )
    if any(isinstance(c, ObjColumn) for c in columns):
        return ObjColumn(np.concatenate([c.to_objects() for c in columns]))
    dicts = [c.to_dict_column() if isinstance(c, NumColumn) else c for c in columns]
    return _concat_dicts(dicts)  # type: ignore[arg-type]


def _concat_dicts(columns: Sequence[DictColumn]) -> DictColumn:
    first = columns[0].dictionary
    if all(c.dictionary is first for c in columns):
        return DictColumn(np.concatenate([c.codes for c in columns]), first)
    index: dict[Any, int] = {}
    merged: list[Any] = []
    parts = []
    for c in columns:
        remap = np.empty(len(c.dictionary) + 1, dtype=np.int32)
        remap[-1] = -1
        for j, v in enumerate(c.dictionary):
            k = hash_key(v)
            code = index.get(k)
            if code is None:
                code = index[k] = len(merged)
                merged.append(v)
            remap[j] = code
        parts.append(remap[c.codes])
    return DictColumn(np.concatenate(parts), _object_array(merged))


@dataclass(frozen=True, slots=True)
class Batch:
    """``n`` rows: record keys and named columns of equal length."""

    keys: Objects
    columns: Mapping[str, Column] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def column(self, name: str) -> Column:
        """The named column; an all-missing column when the batch has none of that name."""
        col = self.columns.get(name)
        return col if col is not None else missing_column(len(self))

    def take(self, index: Index) -> Batch:
        cols = {n: c.take(index) for n, c in self.columns.items()}
        if self.keys.base is _NO_KEYS and len(self.keys):  # placeholders: nothing to copy
            return Batch(no_keys(_index_len(index, len(self.keys))), cols)
        return Batch(self.keys[index], cols)

    def select(self, names: Iterable[str]) -> Batch:
        return Batch(self.keys, {n: self.column(n) for n in names})

    def with_columns(self, columns: Mapping[str, Column]) -> Batch:
        return Batch(self.keys, {**self.columns, **columns})

    def without(self, names: Iterable[str]) -> Batch:
        drop = set(names)
        return Batch(self.keys, {n: c for n, c in self.columns.items() if n not in drop})

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(key, {column: value})`` per row, missing fields left out (for tests and small sets)."""
        objs = {n: c.to_objects() for n, c in self.columns.items()}
        for i, key in enumerate(self.keys):
            yield key, {n: o[i] for n, o in objs.items() if o[i] is not MISSING}

    @classmethod
    def empty(cls, names: Iterable[str] = ()) -> Batch:
        return cls(_object_array([]), {n: missing_column(0) for n in names})

    @classmethod
    def from_columns(cls, keys: Sequence[str], columns: Mapping[str, Sequence[Any]]) -> Batch:
        return cls(_object_array(list(keys)), {n: build_column(v) for n, v in columns.items()})

    @classmethod
    def from_records(
        cls, records: Iterable[tuple[str, Mapping[str, Any]]], fields: Sequence[str] | None = None
    ) -> Batch:
        """Columns of top-level fields from ``(key, value)`` pairs (values that are not maps
        hold no fields). ``fields=None`` takes every field any record has."""
        pairs = list(records)
        keys = [k for k, _ in pairs]
        vals = [v if isinstance(v, Mapping) else {} for _, v in pairs]
        if fields is None:
            seen: dict[str, None] = {}
            for v in vals:
                seen.update(dict.fromkeys(v))
            fields = list(seen)
        return cls.from_columns(keys, {f: [v.get(f, MISSING) for v in vals] for f in fields})


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """The rows of every batch in order; a column absent from some batch is missing there."""
    batches = [b for b in batches if len(b)] or list(batches[:1])
    if not batches:
        return Batch.empty()
    if len(batches) == 1:
        return batches[0]
    names: dict[str, None] = {}
    for b in batches:
        names.update(dict.fromkeys(b.columns))
    return Batch(
        np.concatenate([b.keys for b in batches]),
        {n: concat_columns([b.column(n) for b in batches]) for n in names},
    )


def rows_of(batch: Batch) -> int:
    return len(batch)
