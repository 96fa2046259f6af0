"""Predicate trees evaluated over columns: one boolean mask per batch.

The semantics are libs.query's (``compile_filter``); this module only decides *how* to get the
same answer for a whole batch at once:

* a leaf on a numeric column with a number (or a list or pair of numbers) is a numpy
  comparison;
* a leaf on a dictionary column is evaluated once per distinct value with libs.query's own
  filter and gathered through the codes (``lut[codes]``), so strings, booleans, ``like`` and
  ``regex`` cost one evaluation per distinct value, not per row;
* anything else (lists and maps, ``valueRef: "data.*"``, the record key) runs libs.query's
  filter row by row over minimal records rebuilt from the columns it reads; a where-map field
  or reference whose name the columns cannot express makes the whole filter run row by row
  over the decoded values (``VALUE_COLUMN``).

``and``/``or``/``not`` combine masks with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from libs.dag.batch import VALUE_COLUMN, Batch, Column, DictColumn, Mask, NumColumn, ObjColumn
from libs.dag.values import MISSING
from libs.query import compile_filter
from libs.query.predicate import KNOWN_OPS, LEAF_OPS, LOGIC_OPS, NULL_OPS

KEY_FIELD = "_key"
MaskFn = Callable[[Batch], Mask]


@dataclass(frozen=True, slots=True)
class BatchFilter:
    """A compiled filter: ``mask(batch)``; ``fields`` are the columns it reads."""

    mask: MaskFn
    fields: tuple[str, ...]
    needs_values: bool = False  # reads VALUE_COLUMN (row-by-row over decoded values)
    vectorised: bool = True  # no leaf falls back to row-by-row evaluation
    uses_keys: bool = False  # reads the record keys (``_key`` or a row-by-row leaf)

    def __call__(self, batch: Batch) -> Mask:
        return self.mask(batch)


def _all(batch: Batch) -> Mask:
    return np.ones(len(batch), dtype=bool)


def _none(batch: Batch) -> Mask:
    return np.zeros(len(batch), dtype=bool)


MATCH_ALL = BatchFilter(_all, ())


def is_number(v: Any) -> bool:
    t = type(v)
    return t is int or t is float


def set_path(record: dict[str, Any], path: Sequence[str], value: Any) -> None:
    cur = record
    for seg in path[:-1]:
        nxt = cur.get(seg)
        if not isinstance(nxt, dict):
            nxt = cur[seg] = {}
        cur = nxt
    cur[path[-1]] = value


def compile_batch_filter(
    predicate: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    *,
    principal: Mapping[str, Any] | None = None,
) -> BatchFilter:
    """The batch form of ``libs.query.compile_filter(predicate, where)``; raises QueryError for
    the same malformed trees."""
    row_filter = compile_filter(predicate, where, principal=principal)  # validates
    if predicate is not None:
        c = _Compiler(principal)
        fn = c.node(predicate)
        if c.whole_record:
            return _whole_record(row_filter)
        return BatchFilter(fn, tuple(c.fields), False, c.vectorised, not c.vectorised)
    if where is not None:
        if any("." in name or name == KEY_FIELD for name in where):
            return _whole_record(row_filter)
        return _compile_where(where)
    return MATCH_ALL


def _whole_record(row_filter: Callable[[str, Any], bool]) -> BatchFilter:
    unpackb = msgpack.unpackb

    def mask(batch: Batch) -> Mask:
        values = batch.column(VALUE_COLUMN).to_objects()
        return np.fromiter(
            (
                v is not MISSING and row_filter(k, unpackb(v, raw=False))
                for k, v in zip(batch.keys, values, strict=True)
            ),
            bool,
            len(batch),
        )

    return BatchFilter(mask, (VALUE_COLUMN,), True, False, True)


class _Compiler:
    def __init__(self, principal: Mapping[str, Any] | None) -> None:
        self.principal = principal
        self.fields: dict[str, None] = {}
        self.whole_record = False
        self.vectorised = True

    def node(self, node: Mapping[str, Any]) -> MaskFn:
        op = node.get("op")
        if op in LOGIC_OPS:
            kids = [self.node(ch) for ch in node.get("children") or ()]
            if op == "not":
                if not kids:
                    return _all
                k0 = kids[0]
                return lambda b: ~k0(b)
            if not kids:
                return _all if op == "and" else _none
            if len(kids) == 1:
                return kids[0]
            if op == "and":

                def and_mask(b: Batch) -> Mask:
                    m = kids[0](b)
                    for k in kids[1:]:
                        if not m.any():
                            break
                        m = m & k(b)
                    return m

                return and_mask

            def or_mask(b: Batch) -> Mask:
                m = kids[0](b)
                for k in kids[1:]:
                    m = m | k(b)
                return m

            return or_mask
        if op not in KNOWN_OPS:
            return _none
        attribute = node.get("attribute")
        if attribute is None:
            return _none
        if op in NULL_OPS and (attribute == "auth" or attribute.startswith("auth.")):
            f = compile_filter(node, principal=self.principal)
            return _all if f("", {}) else _none
        value_ref = node.get("valueRef")
        if value_ref is not None:
            ns, _, rest = value_ref.partition(".")
            if ns == "data":
                if not rest:
                    self.whole_record = True
                    return _none
                return self._row_leaf(node, [attribute, rest])
            if ns != "auth":
                return _none
            # an auth reference is a constant for the whole job: the row filter resolves it
            return self._leaf(node, attribute)
        if op in LEAF_OPS and node.get("value") is None:
            return _none
        return self._leaf(node, attribute)

    def _use(self, name: str) -> None:
        self.fields[name] = None

    def _leaf(self, node: Mapping[str, Any], attribute: str) -> MaskFn:
        if attribute == KEY_FIELD:
            return self._row_leaf(node, [])
        self._use(attribute)
        row_filter = compile_filter(node, principal=self.principal)
        path = attribute.split(".")
        op = node["op"]
        expected = node.get("value")
        numeric = _numeric_leaf(op, expected) if node.get("valueRef") is None else None

        def leaf(batch: Batch) -> Mask:
            col = batch.column(attribute)
            if isinstance(col, NumColumn):
                if numeric is not None:
                    return numeric(col)
                col = col.to_dict_column()
            if isinstance(col, DictColumn):
                return _lut_mask(col, path, row_filter)
            return _rows_mask(batch, [(attribute, col)], row_filter)

        return leaf

    def _row_leaf(self, node: Mapping[str, Any], attributes: Sequence[str]) -> MaskFn:
        names = [a for a in attributes if a != KEY_FIELD]
        for n in names:
            self._use(n)
        self.vectorised = False
        row_filter = compile_filter(node, principal=self.principal)

        def leaf(batch: Batch) -> Mask:
            return _rows_mask(batch, [(n, batch.column(n)) for n in names], row_filter)

        return leaf


def _lut_mask(col: DictColumn, path: list[str], row_filter: Callable[[str, Any], bool]) -> Mask:
    """Evaluate once per distinct value (and once for "missing"), then gather by code."""
    lut = np.empty(len(col.dictionary) + 1, dtype=bool)
    for i, v in enumerate(col.dictionary):
        rec: dict[str, Any] = {}
        set_path(rec, path, v)
        lut[i] = row_filter("", rec)
    lut[-1] = row_filter("", {})
    return lut[col.codes]


def _rows_mask(
    batch: Batch, columns: Sequence[tuple[str, Column]], row_filter: Callable[[str, Any], bool]
) -> Mask:
    objs = [(n.split("."), c.to_objects()) for n, c in columns]
    out = np.empty(len(batch), dtype=bool)
    for i, key in enumerate(batch.keys):
        rec: dict[str, Any] = {}
        for path, o in objs:
            v = o[i]
            if v is not MISSING:
                set_path(rec, path, v)
        out[i] = row_filter(key, rec)
    return out


_NEVER_NUMERIC = frozenset(
    ("eq", "gt", "gte", "lt", "lte", "between", "like", "regex", "startsWith", "endsWith")
)


def _numeric_leaf(op: str, expected: Any) -> Callable[[NumColumn], Mask] | None:
    """A numpy form of a leaf on a numeric column, when the comparison value allows one."""
    if op == "isNull":
        return lambda c: ~c.valid
    if op == "isNotNull":
        return lambda c: c.valid.copy()
    if op in ("eq", "neq", "gt", "gte", "lt", "lte") and is_number(expected):
        x = float(expected)
        if op == "eq":
            return lambda c: c.valid & (c.values == x)
        if op == "neq":
            return lambda c: c.valid & ~(c.values == x)
        if op == "gt":
            return lambda c: c.valid & (c.values > x)
        if op == "gte":
            return lambda c: c.valid & (c.values >= x)
        if op == "lt":
            return lambda c: c.valid & (c.values < x)
        return lambda c: c.valid & (c.values <= x)
    if op == "between" and isinstance(expected, list | tuple) and len(expected) == 2:
        lo, hi = expected
        if is_number(lo) and is_number(hi):
            flo, fhi = float(lo), float(hi)
            return lambda c: c.valid & (c.values >= flo) & (c.values <= fhi)
        return None
    if op == "in" and isinstance(expected, list | tuple):
        nums = [float(v) for v in expected if is_number(v) and not math.isnan(v)]
        arr = np.asarray(nums, dtype=np.float64)
        return lambda c: c.valid & np.isin(c.values, arr)
    if op in _NEVER_NUMERIC and isinstance(expected, str | bool):
        return lambda c: np.zeros(len(c), dtype=bool)  # numbers never match these
    return None


def _compile_where(where: Mapping[str, Any]) -> BatchFilter:
    """Equality on top-level fields; a present ``null`` equals ``null``."""
    items = list(where.items())
    if not items:
        return MATCH_ALL
    fns: list[MaskFn] = []
    for name, expected in items:
        fns.append(_where_item(name, expected))

    def mask(batch: Batch) -> Mask:
        m = fns[0](batch)
        for f in fns[1:]:
            m = m & f(batch)
        return m

    return BatchFilter(mask, tuple(name for name, _ in items))


def _where_item(name: str, expected: Any) -> MaskFn:
    row_filter = compile_filter(where={name: expected})
    x = float(expected) if is_number(expected) else None

    def item(batch: Batch) -> Mask:
        col = batch.column(name)
        if isinstance(col, NumColumn):
            if x is not None:
                return col.valid & (col.values == x)
            if expected is None:
                return col.nulls.copy() if col.nulls is not None else np.zeros(len(col), bool)
            return np.zeros(len(col), dtype=bool)
        if isinstance(col, DictColumn):
            return _lut_mask(col, [name], row_filter)
        return _rows_mask(batch, [(name, col)], row_filter)

    return item


def keep(batch: Batch, mask: Mask) -> Batch:
    """The rows of ``batch`` where ``mask`` holds (the batch itself when all do)."""
    if mask.all():
        return batch
    return batch.take(np.flatnonzero(mask))


__all__ = ["MATCH_ALL", "BatchFilter", "ObjColumn", "compile_batch_filter", "keep"]
