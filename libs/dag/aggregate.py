"""GROUP BY with partial and combine stages, over columns.

The semantics are libs.query's ``GroupAccumulator`` (a missing group-by field groups as
``null``; numbers group by value; ``sum``/``avg``/``min``/``max`` take numbers only; the sum of
no numbers is 0, the others ``None``; NaN is skipped by ``min``/``max``). Integer sums are exact;
float sums are float64 sums (equal to the exactly rounded sum within float rounding).

Three pure functions do the work, each one numpy pass per batch:

* :func:`partial_states` — rows → one *state row* per group of the batch;
* :func:`combine_states` — state rows (from any number of partials) → one state row per group;
* :func:`final_rows` — state rows → result rows keyed by bucket id, shaped as QUERY_RESP
  group rows (``__key``, ``__count``, the group-by fields, ``__sum_<f>`` ...).

:class:`AggregateP` runs them as a processor in one of four modes: ``partial`` on the storage
node, ``combine``/``final`` on the coordinator, ``complete`` for a single-stage job.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from libs.dag.batch import (
    Batch,
    Column,
    DictColumn,
    NumColumn,
    ObjColumn,
    build_column,
    concat_batches,
)
from libs.dag.processor import BaseProcessor, Inbox
from libs.dag.values import MISSING, deep_key, hash_key
from libs.query.aggregate import bucket_part

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
FUNCS = ("count", "sum", "min", "max", "avg", "count_distinct")
_EXACT = 2.0**53
_COMPACT_AFTER = 65_536  # state rows held before a partial aggregate combines them


@dataclass(frozen=True, slots=True)
class AggSpec:
    """One aggregate: ``count`` (no field), ``sum``/``min``/``max``/``avg``/``count_distinct``."""

    func: str
    field: str | None = None

    def __post_init__(self) -> None:
        if self.func not in FUNCS:
            raise ValueError(f"unknown aggregate {self.func!r}; expected one of {', '.join(FUNCS)}")
        if self.func != "count" and not self.field:
            raise ValueError(f"aggregate {self.func} needs a field")

    @property
    def output_name(self) -> str | None:
        if self.func == "count" or self.field is None:
            return None
        return f"__{self.func}_{self.field}"


def _stat_needs(aggs: Sequence[AggSpec]) -> dict[str, set[str]]:
    """Per field, the state columns its aggregates need."""
    needs: dict[str, set[str]] = {}
    for a in aggs:
        if a.field is None or a.func == "count":
            continue
        s = needs.setdefault(a.field, set())
        if a.func == "sum":
            s.update(("isum", "fsum"))
        elif a.func == "avg":
            s.update(("n", "isum", "fsum"))
        elif a.func == "count_distinct":
            s.add("set")
        else:
            s.add(a.func)
    return needs


def state_name(stat: str, field: str) -> str:
    return f"__{stat}.{field}"


# --- group codes ---------------------------------------------------------------------------------


def _factorize(col: Column) -> tuple[I64, list[Any]]:
    """Per-row codes into a list of distinct values; missing and ``None`` share one code."""
    codes, uniques, _ = _factorize_dense(col)
    return codes, uniques


def _factorize_dense(col: Column) -> tuple[I64, list[Any], bool]:
    """:func:`_factorize`, and whether every code is used (``0..len(uniques)-1`` all occur)."""
    n = len(col)
    if isinstance(col, NumColumn):
        vals = col.values[col.valid]
        if col.integral and len(vals) and float(vals.max()) - float(vals.min()) < 4 * n + 1024:
            lo = float(vals.min())
            span = int(float(vals.max()) - lo) + 1
            codes = np.full(n, span, dtype=np.int64)
            codes[col.valid] = (vals - lo).astype(np.int64)
            uniques: list[Any] = [int(lo) + i for i in range(span)]
            uniques.append(None)
            return codes, uniques, False
        u, inverse = np.unique(vals, return_inverse=True)
        codes = np.full(n, len(u), dtype=np.int64)
        codes[col.valid] = inverse
        uniques = u.astype(np.int64).tolist() if col.integral else u.tolist()
        uniques.append(None)
        return codes, uniques, bool(col.valid.all())
    if isinstance(col, DictColumn):
        size = len(col.dictionary)
        codes = col.codes.astype(np.int64)
        missing = codes < 0
        if missing.any():
            codes[missing] = size  # missing groups with null
        if size + 1 <= 4 * n + 1024:
            used = np.flatnonzero(np.bincount(codes, minlength=size + 1))
            dense = np.empty(size + 1, dtype=np.int64)
            dense[used] = np.arange(len(used))
            codes = dense[codes]
        else:
            used, codes = np.unique(codes, return_inverse=True)
        uniques = [None if u == size else col.dictionary[u] for u in used.tolist()]
        nones = [i for i, v in enumerate(uniques) if v is None]
        if len(nones) > 1:  # an explicit null and missing rows: one group
            merge = np.arange(len(uniques), dtype=np.int64)
            merge[nones[1:]] = nones[0]
            return merge[codes].reshape(-1), uniques, False
        return codes.reshape(-1), uniques, True
    index: dict[Any, int] = {}
    uniques = []
    codes = np.empty(n, dtype=np.int64)
    for i, v in enumerate(col.values):
        if v is MISSING:
            v = None
        k = deep_key(v)
        c = index.get(k)
        if c is None:
            c = index[k] = len(uniques)
            uniques.append(v)
        codes[i] = c
    return codes, uniques, True


def group_codes(batch: Batch, group_by: Sequence[str]) -> tuple[I64, list[tuple[Any, ...]]]:
    """Dense group ids ``0..G-1`` per row and each group's group-by values."""
    n = len(batch)
    if not group_by:
        return np.zeros(n, dtype=np.int64), [()]
    if len(group_by) == 1:
        codes, uniques, dense = _factorize_dense(batch.column(group_by[0]))
        if dense:
            return codes, [(u,) for u in uniques]
    parts = [_factorize(batch.column(f)) for f in group_by]
    sizes = [len(u) for _, u in parts]
    radix_total = math.prod(sizes)
    if radix_total < 2**62:
        combined = parts[0][0]
        for (codes, _), size in zip(parts[1:], sizes[1:], strict=True):
            combined = combined * size + codes
        if radix_total <= max(4 * n, 1 << 16):
            counts = np.bincount(combined, minlength=radix_total)
            used = np.flatnonzero(counts)
            remap = np.full(radix_total, -1, dtype=np.int64)
            remap[used] = np.arange(len(used))
            gid = remap[combined]
        else:
            used, gid = np.unique(combined, return_inverse=True)
        values = []
        for u in used.tolist():
            tup = []
            for (_, uniques), size in zip(reversed(parts), reversed(sizes), strict=True):
                u, r = divmod(u, size)
                tup.append(uniques[r])
            values.append(tuple(reversed(tup)))
        return gid.astype(np.int64), values
    stacked = np.stack([c for c, _ in parts])
    used2, gid = np.unique(stacked, axis=1, return_inverse=True)
    values = [
        tuple(parts[j][1][int(used2[j, g])] for j in range(len(parts)))
        for g in range(used2.shape[1])
    ]
    return gid.reshape(-1).astype(np.int64), values


# --- numeric views -------------------------------------------------------------------------------


def numeric_view(col: Column) -> NumColumn | None:
    """The numbers of a column (everything else invalid); None when some integer is too large
    for float64 to hold exactly."""
    if isinstance(col, NumColumn):
        return col
    if isinstance(col, DictColumn):
        d = col.dictionary
        lut_valid = np.zeros(len(d) + 1, dtype=bool)
        lut_vals = np.zeros(len(d) + 1, dtype=np.float64)
        integral = True
        for i, v in enumerate(d):
            t = type(v)
            if t is int or t is float:
                if t is int and abs(v) >= _EXACT:
                    return None
                lut_valid[i] = True
                lut_vals[i] = v
                integral = integral and t is int
        return NumColumn(lut_vals[col.codes], lut_valid[col.codes], integral)
    vals = [v if type(v) is int or type(v) is float else MISSING for v in col.values]
    num = build_column(vals)
    return num if isinstance(num, NumColumn) else numeric_view(num)


def _int_sums(gid: I64, G: int, valid: npt.NDArray[np.bool_], values: F64, raw: Column) -> Column:
    """Exact integer sums per group."""
    w = values[valid]
    if float(np.abs(w).sum()) < _EXACT:
        sums = np.bincount(gid[valid], weights=w, minlength=G).astype(np.float64)
        return NumColumn(sums, np.ones(G, dtype=bool), True)
    totals = [0] * G
    objs = raw.to_objects()
    for g, v in zip(gid.tolist(), objs, strict=True):
        if type(v) is int:
            totals[g] += v
    return build_column(totals)


def _numeric_states(col: Column, gid: I64, G: int, stats: set[str]) -> dict[str, Column]:
    out: dict[str, Column] = {}
    num = numeric_view(col)
    if num is None:  # an integer beyond 2**53: exact Python arithmetic for this field
        return _python_states(col, gid, G, stats)
    valid, values = num.valid, num.values
    if valid.all():  # no masking needed: index with a full slice (a view, no copy)
        valid = slice(None)  # type: ignore[assignment]
    if "n" in stats:
        out["n"] = NumColumn(
            np.bincount(gid[valid], minlength=G).astype(np.float64), np.ones(G, dtype=bool), True
        )
    if "isum" in stats:
        if num.integral:
            out["isum"] = _int_sums(gid, G, valid, values, col)
            out["fsum"] = NumColumn(np.zeros(G), np.ones(G, dtype=bool), False)
        else:
            out["isum"] = NumColumn(np.zeros(G), np.ones(G, dtype=bool), True)
            out["fsum"] = NumColumn(
                np.bincount(gid[valid], weights=values[valid], minlength=G).astype(np.float64),
                np.ones(G, dtype=bool),
                False,
            )
    for stat, fn, init in (("min", np.minimum, np.inf), ("max", np.maximum, -np.inf)):
        if stat not in stats:
            continue
        ok = num.valid & ~np.isnan(values)
        acc = np.full(G, init)
        fn.at(acc, gid[ok], values[ok])
        seen = np.bincount(gid[ok], minlength=G) > 0
        out[stat] = NumColumn(np.where(seen, acc, 0.0), seen, num.integral)
    return out


def _python_states(col: Column, gid: I64, G: int, stats: set[str]) -> dict[str, Column]:
    n = [0] * G
    isum = [0] * G
    fsum = [0.0] * G
    mins: list[Any] = [MISSING] * G
    maxs: list[Any] = [MISSING] * G
    for g, v in zip(gid.tolist(), col.to_objects(), strict=True):
        t = type(v)
        if t is not int and t is not float:
            continue
        n[g] += 1
        if t is int:
            isum[g] += v
        else:
            fsum[g] += v
        if v == v:
            if mins[g] is MISSING or v < mins[g]:
                mins[g] = v
            if maxs[g] is MISSING or v > maxs[g]:
                maxs[g] = v
    cols: dict[str, list[Any]] = {"n": n, "isum": isum, "fsum": fsum, "min": mins, "max": maxs}
    return {
        s: build_column(cols[s])
        for s in ("n", "isum", "fsum", "min", "max")
        if s in stats or (s == "fsum" and "isum" in stats)
    }


def _distinct_state(col: Column, gid: I64, G: int) -> ObjColumn:
    sets: list[dict[Any, Any]] = [{} for _ in range(G)]
    if isinstance(col, DictColumn):
        pairs = np.unique(np.stack([gid, col.codes.astype(np.int64)]), axis=1)
        for g, c in pairs.T.tolist():
            if c >= 0 and col.dictionary[c] is not None:
                v = col.dictionary[c]
                sets[g][hash_key(v)] = v
    else:
        for g, v in zip(gid.tolist(), col.to_objects(), strict=True):
            if v is not MISSING and v is not None:
                sets[g][deep_key(v)] = v
    out = np.empty(G, dtype=object)
    out[:] = [list(s.values()) for s in sets]
    return ObjColumn(out)


def _group_columns(group_by: Sequence[str], values: list[tuple[Any, ...]]) -> dict[str, Column]:
    return {f: build_column([v[j] for v in values]) for j, f in enumerate(group_by)}


def partial_states(batch: Batch, group_by: Sequence[str], aggs: Sequence[AggSpec]) -> Batch:
    """One state row per group of ``batch``."""
    gid, values = group_codes(batch, group_by)
    G = len(values)
    cols = _group_columns(group_by, values)
    cols["__count"] = NumColumn(
        np.bincount(gid, minlength=G).astype(np.float64), np.ones(G, dtype=bool), True
    )
    for f, stats in _stat_needs(aggs).items():
        col = batch.column(f)
        for stat, c in _numeric_states(col, gid, G, stats - {"set"}).items():
            cols[state_name(stat, f)] = c
        if "set" in stats:
            cols[state_name("set", f)] = _distinct_state(col, gid, G)
    return Batch(np.full(G, "", dtype=object), cols)


def combine_states(states: Batch, group_by: Sequence[str], aggs: Sequence[AggSpec]) -> Batch:
    """Merge state rows of the same groups (from any partials) into one row per group."""
    gid, values = group_codes(states, group_by)
    G = len(values)
    cols = _group_columns(group_by, values)
    cols["__count"] = _sum_column(states.column("__count"), gid, G, True)
    for f, stats in _stat_needs(aggs).items():
        for stat in stats:
            name = state_name(stat, f)
            src = states.column(name)
            if stat in ("n", "isum"):
                cols[name] = _sum_column(src, gid, G, True)
            elif stat == "fsum":
                cols[name] = _sum_column(src, gid, G, False)
            elif stat in ("min", "max"):
                cols[name] = _extreme_column(src, gid, G, stat)
            else:
                cols[name] = _union_column(src, gid, G)
        if "isum" in stats and state_name("fsum", f) not in cols:
            cols[state_name("fsum", f)] = _sum_column(
                states.column(state_name("fsum", f)), gid, G, False
            )
    return Batch(np.full(G, "", dtype=object), cols)


def _sum_column(src: Column, gid: I64, G: int, integral: bool) -> Column:
    num = numeric_view(src)
    if num is None or (integral and float(np.abs(num.values[num.valid]).sum()) >= _EXACT):
        totals: list[Any] = [0] * G if integral else [0.0] * G
        for g, v in zip(gid.tolist(), src.to_objects(), strict=True):
            if v is not MISSING and v is not None:
                totals[g] += v
        return build_column(totals)
    sums = np.bincount(gid[num.valid], weights=num.values[num.valid], minlength=G)
    return NumColumn(sums.astype(np.float64), np.ones(G, dtype=bool), integral and num.integral)


def _extreme_column(src: Column, gid: I64, G: int, stat: str) -> Column:
    num = numeric_view(src)
    if num is None:
        best: list[Any] = [MISSING] * G
        for g, v in zip(gid.tolist(), src.to_objects(), strict=True):
            if v is MISSING or v is None:
                continue
            b = best[g]
            if b is MISSING or (v < b if stat == "min" else v > b):
                best[g] = v
        return build_column(best)
    ok = num.valid
    acc = np.full(G, np.inf if stat == "min" else -np.inf)
    (np.minimum if stat == "min" else np.maximum).at(acc, gid[ok], num.values[ok])
    seen = np.bincount(gid[ok], minlength=G) > 0
    return NumColumn(np.where(seen, acc, 0.0), seen, num.integral)


def _union_column(src: Column, gid: I64, G: int) -> ObjColumn:
    sets: list[dict[Any, Any]] = [{} for _ in range(G)]
    for g, vs in zip(gid.tolist(), src.to_objects(), strict=True):
        if vs is MISSING or vs is None:
            continue
        for v in vs:
            sets[g][deep_key(v)] = v
    out = np.empty(G, dtype=object)
    out[:] = [list(s.values()) for s in sets]
    return ObjColumn(out)


def bucket_id(values: Sequence[Any]) -> str:
    return "|".join(bucket_part(v) for v in values)


def final_rows(states: Batch, group_by: Sequence[str], aggs: Sequence[AggSpec]) -> Batch:
    """Result rows, keyed by bucket id, from fully combined state rows."""
    G = len(states)
    group_vals = [states.column(f).to_objects() for f in group_by]
    ids = [bucket_id([None if gv[i] is MISSING else gv[i] for gv in group_vals]) for i in range(G)]
    cols: dict[str, list[Any]] = {"__key": ids}
    counts = states.column("__count").to_objects()
    cols["__count"] = [int(c) for c in counts]
    for f, gv in zip(group_by, group_vals, strict=True):
        cols[f] = [None if v is MISSING else v for v in gv]
    for a in aggs:
        name = a.output_name
        if name is None or a.field is None:
            continue
        f = a.field
        if a.func == "count_distinct":
            cols[name] = [
                0 if s is MISSING else len(s)
                for s in states.column(state_name("set", f)).to_objects()
            ]
            continue
        if a.func in ("min", "max"):
            cols[name] = [
                None if v is MISSING else v
                for v in states.column(state_name(a.func, f)).to_objects()
            ]
            continue
        totals = _totals(states, f)
        if a.func == "sum":
            cols[name] = totals
        else:
            ns = states.column(state_name("n", f)).to_objects()
            cols[name] = [
                None if n is MISSING or n == 0 else t / n for t, n in zip(totals, ns, strict=True)
            ]
    batch = Batch.from_columns(ids, cols)
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable") if G else np.arange(0)
    return batch.take(order)


def _totals(states: Batch, f: str) -> list[Any]:
    isums = states.column(state_name("isum", f)).to_objects()
    fsums = states.column(state_name("fsum", f)).to_objects()
    out: list[Any] = []
    for i, s in zip(isums, fsums, strict=True):
        i = 0 if i is MISSING else int(i)
        s = 0.0 if s is MISSING else float(s)
        out.append(i if s == 0.0 else s + i)
    return out


class AggMode(enum.Enum):
    PARTIAL = "partial"  # rows -> state rows
    COMBINE = "combine"  # state rows -> state rows
    FINAL = "final"  # state rows -> result rows
    COMPLETE = "complete"  # rows -> result rows


class AggregateP(BaseProcessor):
    """Accumulate every input batch; emit the groups in ``complete()``."""

    def __init__(self, group_by: Sequence[str], aggs: Sequence[AggSpec], mode: AggMode) -> None:
        super().__init__()
        self.group_by = tuple(group_by)
        self.aggs = tuple(aggs)
        self.mode = mode
        self._states: list[Batch] = []
        self._rows = 0
        self._done = False

    def process(self, ordinal: int, inbox: Inbox) -> None:
        takes_rows = self.mode in (AggMode.PARTIAL, AggMode.COMPLETE)
        while inbox:
            batch: Batch = inbox.popleft()
            if not len(batch):
                continue
            state = partial_states(batch, self.group_by, self.aggs) if takes_rows else batch
            self._states.append(state)
            self._rows += len(state)
            if self._rows > _COMPACT_AFTER and len(self._states) > 1:
                self._compact()

    def _compact(self) -> Batch:
        merged = concat_batches(self._states)
        combined = (
            combine_states(merged, self.group_by, self.aggs) if len(self._states) > 1 else merged
        )
        self._states = [combined]
        self._rows = len(combined)
        return combined

    def complete(self) -> bool:
        if not self._done:
            self._done = True
            if not self._states:
                states = (
                    partial_states(Batch.empty(), self.group_by, self.aggs)
                    if not self.group_by
                    else None
                )
                if states is None:
                    return True
                self._states = [states]
            states = (
                self._compact()
                if len(self._states) > 1 or self.mode is AggMode.COMBINE
                else self._states[0]
            )
            if self.mode in (AggMode.FINAL, AggMode.COMPLETE):
                out = final_rows(states, self.group_by, self.aggs)
            else:
                out = states
            self._states = []
            return self.emit_from(iter([out]) if len(out) else iter(()))
        return self.emit_from()
