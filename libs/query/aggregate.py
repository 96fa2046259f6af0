"""GROUP BY with count/sum/min/max/avg, in a partial/combine form (PROTOCOL.md 6.3).

Each result row is one group: ``key`` is a bucket id (``"S1:a"`` for the string ``"a"``; one
part per group-by field, joined with ``|``), and ``value`` is
``{"__key": id, "__count": n, <group-by fields with their values>, <requested aggregates>}``
where only the requested ``__sum_<f>``, ``__min_<f>``, ``__max_<f>``, ``__avg_<f>`` appear
(``count`` adds nothing beyond ``__count``).

Rules: a missing group-by field groups as ``null``; numbers group by numeric value (``1`` and
``1.0`` are one group). ``sum``, ``avg``, ``min`` and ``max`` consider numbers only (never
booleans), skipping everything else; the sum of no numbers is ``0``; ``avg``, ``min`` and
``max`` of no numbers are ``None``; NaN is skipped by ``min``/``max``. Integer sums are exact;
float sums are exactly rounded (``math.fsum`` over an exactly kept multiset), so a sum does not depend
on the order rows arrive in, on how partial accumulators were combined, or on rows taken
out again.

:class:`GroupAccumulator` is the partial form: feed it rows with :meth:`~GroupAccumulator.add`
(one per partition, say), :meth:`~GroupAccumulator.merge` the partials, and read the group
rows with :meth:`~GroupAccumulator.result`; the rows equal a one-shot pass over all rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from libs.query.model import Aggregation
from libs.query.predicate import field_getter
from libs.query.values import is_number


def bucket_part(value: Any) -> str:
    """One group-by value as a bucket-id part (typed, length-prefixed, unambiguous)."""
    if value is None:
        return "Z"
    if isinstance(value, bool):
        return "B1" if value else "B0"
    if is_number(value):
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        return f"N{value!r}"
    if isinstance(value, str):
        return f"S{len(value)}:{value}"
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)
    return f"J{len(text)}:{text}"


class _FieldStats:
    """Numeric statistics of one field within one group; exact under add, remove and merge."""

    __slots__ = (
        "extremes",
        "floats",
        "int_sum",
        "max",
        "min",
        "n",
        "nan",
        "neg_inf",
        "pos_inf",
        "stale",
    )

    def __init__(self, extremes: bool = True) -> None:
        self.extremes = extremes  # whether min/max are asked for (and so kept fresh)
        self.n = 0
        self.int_sum = 0
        self.floats: list[float] = []  # an exact multiset sum, compressed now and then
        self.pos_inf = self.neg_inf = self.nan = 0
        self.min: Any = None
        self.max: Any = None
        self.stale = False  # min/max may be out of date after a remove

    def add(self, x: Any) -> None:
        t = type(x)
        if t is int:
            self.n += 1
            self.int_sum += x
        elif t is float:
            self.n += 1
            if x - x == 0.0:  # finite
                self.floats.append(x)
                if len(self.floats) > _COMPRESS_AT:
                    self.floats = _exact_parts(self.floats)
            else:
                self._count_special(x, 1)
                if x != x:
                    return
        elif is_number(x):
            self.add(float(x) if isinstance(x, float) else int(x))
            return
        else:
            return
        if self.min is None or x < self.min:
            self.min = x
        if self.max is None or x > self.max:
            self.max = x

    def remove(self, x: Any) -> None:
        t = type(x)
        if t is int:
            self.n -= 1
            self.int_sum -= x
        elif t is float:
            self.n -= 1
            if x - x == 0.0:
                self.floats.append(-x)
                if len(self.floats) > _COMPRESS_AT:
                    self.floats = _exact_parts(self.floats)
            else:
                self._count_special(x, -1)
                if x != x:
                    return
        elif is_number(x):
            self.remove(float(x) if isinstance(x, float) else int(x))
            return
        else:
            return
        if self.n == 0:
            self.min = self.max = None
            self.stale = False
        elif self.extremes and (x == self.min or x == self.max):
            self.stale = True

    def _count_special(self, x: float, step: int) -> None:
        if x != x:
            self.nan += step
        elif x > 0:
            self.pos_inf += step
        else:
            self.neg_inf += step

    def merge(self, other: _FieldStats) -> None:
        self.n += other.n
        self.int_sum += other.int_sum
        self.floats.extend(other.floats)
        if len(self.floats) > _COMPRESS_AT:
            self.floats = _exact_parts(self.floats)
        self.pos_inf += other.pos_inf
        self.neg_inf += other.neg_inf
        self.nan += other.nan
        self.stale = self.stale or other.stale
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max

    def total(self) -> int | float:
        if self.nan or (self.pos_inf and self.neg_inf):
            return math.nan
        if self.pos_inf:
            return math.inf
        if self.neg_inf:
            return -math.inf
        if not self.floats:
            return self.int_sum
        hi = float(self.int_sum)
        lo = float(self.int_sum - int(hi))
        return math.fsum([*self.floats, hi, lo])

    def average(self) -> float | None:
        if self.n == 0:
            return None
        return self.total() / self.n


_COMPRESS_AT = 4096


def _exact_parts(values: list[float]) -> list[float]:
    """A few floats whose exact sum equals the exact sum of ``values`` (all finite).

    Each step takes the correctly rounded sum of what is left (``math.fsum`` is exact
    internally), so the parts shrink by ~2**-53 each time and the loop ends in a few steps.
    """
    parts: list[float] = []
    try:
        while True:
            rest = math.fsum([*values, *(-p for p in parts)])
            if rest == 0.0:
                return parts
            parts.append(rest)
    except OverflowError:  # sums beyond the float range: keep the values as they are
        return values


class _Bucket:
    """The running state of one group."""

    __slots__ = ("count", "group_values", "stats")

    def __init__(
        self, group_values: tuple[Any, ...], stat_fields: Sequence[tuple[str, bool]]
    ) -> None:
        self.count = 0
        self.group_values = group_values
        self.stats = {name: _FieldStats(extremes) for name, extremes in stat_fields}


class GroupAccumulator:
    """Partial GROUP BY state over any number of groups; combine partials with :meth:`merge`.

    Rows can also be taken out again (:meth:`remove`), which keeps count, sum and avg exact;
    removing a group's current minimum or maximum marks that group :meth:`stale` until it is
    :meth:`rebuild`-t from its rows (the live query does that from the rows it holds).
    """

    def __init__(self, group_by: Sequence[str], aggregations: Sequence[Aggregation] = ()) -> None:
        if not group_by:
            raise ValueError("GROUP BY needs at least one field")
        self.group_by = tuple(group_by)
        self.aggregations = tuple(aggregations)
        self._getters: tuple[Callable[[str, Any], Any], ...] = tuple(
            field_getter(f) for f in self.group_by
        )
        stat_fields: dict[str, bool] = {}  # field -> whether min or max is asked for
        for agg in self.aggregations:
            if agg.field is not None and agg.func != "count":
                wants_extremes = agg.func in ("min", "max")
                stat_fields[agg.field] = stat_fields.get(agg.field, False) or wants_extremes
        self._stat_fields = tuple(stat_fields.items())
        self._stat_getters = tuple((f, field_getter(f)) for f in stat_fields)
        self._buckets: dict[str, _Bucket] = {}
        self._ids: dict[tuple[type, Any], str] = {}  # single-field bucket ids by typed value

    def group_of(self, key: str, value: Any) -> tuple[str, tuple[Any, ...]]:
        """The bucket id of a row and its group-by values."""
        if len(self._getters) == 1:
            v = self._getters[0](key, value)
            typed = (v.__class__, v)
            try:
                bucket_id = self._ids.get(typed)
                if bucket_id is None:
                    bucket_id = bucket_part(v)
                    if len(self._ids) < 65_536 and v == v:
                        self._ids[typed] = bucket_id
            except TypeError:  # unhashable group value (a list or a map)
                bucket_id = bucket_part(v)
            return bucket_id, (v,)
        values = tuple(get(key, value) for get in self._getters)
        return "|".join(bucket_part(v) for v in values), values

    def add(self, value: Any, key: str = "") -> str:
        """Fold one matching row in; returns its bucket id (``key`` serves ``_key`` fields)."""
        bucket_id, values = self.group_of(key, value)
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = self._buckets[bucket_id] = _Bucket(values, self._stat_fields)
        bucket.count += 1
        for name, get in self._stat_getters:
            x = get(key, value)
            if x is not None:
                bucket.stats[name].add(x)
        return bucket_id

    def add_all(self, rows: Iterable[tuple[str, Any]]) -> GroupAccumulator:
        for key, value in rows:
            self.add(value, key)
        return self

    def remove(self, value: Any, key: str = "") -> str:
        """Take out a row added earlier; returns its bucket id. An emptied group disappears."""
        bucket_id, _ = self.group_of(key, value)
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            raise KeyError(f"no group {bucket_id!r} to remove a row from")
        bucket.count -= 1
        if bucket.count <= 0:
            del self._buckets[bucket_id]
            return bucket_id
        for name, get in self._stat_getters:
            x = get(key, value)
            if x is not None:
                bucket.stats[name].remove(x)
        return bucket_id

    def stale(self, bucket_id: str) -> bool:
        """True when a remove may have left this group's min or max out of date."""
        bucket = self._buckets.get(bucket_id)
        return bucket is not None and any(s.stale for s in bucket.stats.values())

    def rebuild(self, bucket_id: str, rows: Iterable[tuple[str, Any]]) -> None:
        """Recompute one group from all of its rows."""
        self._buckets.pop(bucket_id, None)
        for key, value in rows:
            self.add(value, key)

    def merge(self, other: GroupAccumulator) -> GroupAccumulator:
        """Fold another partial (same GROUP BY and aggregations) into this one."""
        if other.group_by != self.group_by or other.aggregations != self.aggregations:
            raise ValueError("cannot merge partial aggregates of different GROUP BY queries")
        for bucket_id, theirs in other._buckets.items():
            mine = self._buckets.get(bucket_id)
            if mine is None:
                mine = self._buckets[bucket_id] = _Bucket(theirs.group_values, self._stat_fields)
            mine.count += theirs.count
            for name, _ in self._stat_fields:
                mine.stats[name].merge(theirs.stats[name])
        return self

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, bucket_id: object) -> bool:
        return bucket_id in self._buckets

    def row(self, bucket_id: str) -> dict[str, Any] | None:
        """The result row of one group, or ``None`` when the group is empty."""
        bucket = self._buckets.get(bucket_id)
        if bucket is None or bucket.count == 0:
            return None
        out: dict[str, Any] = {"__key": bucket_id, "__count": bucket.count}
        for name, v in zip(self.group_by, bucket.group_values, strict=True):
            out[name] = v
        for agg in self.aggregations:
            out_name = agg.output_name
            if out_name is None or agg.field is None:
                continue
            stats = bucket.stats[agg.field]
            if agg.func == "sum":
                out[out_name] = stats.total()
            elif agg.func == "avg":
                out[out_name] = stats.average()
            elif agg.func == "min":
                out[out_name] = stats.min
            else:
                out[out_name] = stats.max
        return out

    def result(self) -> list[tuple[str, dict[str, Any]]]:
        """Every group as ``(bucket id, row)``, in bucket-id order."""
        rows = []
        for bucket_id in sorted(self._buckets):
            row = self.row(bucket_id)
            if row is not None:
                rows.append((bucket_id, row))
        return rows
