"""Sort specifications and the total order rows are sorted by.

``sort`` arrives in two shapes (PROTOCOL.md 6.1): HEAD's array ``[{field, direction}]`` and
the older map ``{field: "asc" | "desc"}``; :func:`parse_sort` accepts both and keeps the
fields in the order given.

The order (:func:`sort_key`) is total and deterministic, so that a one-shot evaluation, a live
window and a merge of per-partition results agree row for row:

* for each sort field in turn, values are ranked by kind: numbers (int and float compared
  numerically) < NaN < strings (by code point) < booleans (``false`` < ``true``) < anything
  else (lists, maps, bytes; by their canonical JSON text) < null or missing;
* ``desc`` reverses that whole order for its field, so nulls sort last ascending and first
  descending — HEAD's rule ("missing sorts last", reversed for ``desc``), which is also
  PostgreSQL's default;
* the record key, ascending, breaks every tie.

Field names are dot paths, as in predicates; ``_key`` is the record key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from libs.query.errors import QueryError
from libs.query.predicate import field_getter

Direction = Literal["asc", "desc"]
SortKeyFn = Callable[[str, Any], tuple[Any, ...]]

_NUMBER, _NAN, _STRING, _BOOL, _OTHER, _NULL = range(6)


@dataclass(frozen=True, slots=True)
class SortField:
    """One ``{field, direction}`` entry of a sort."""

    field: str
    direction: Direction = "asc"

    @property
    def descending(self) -> bool:
        return self.direction == "desc"


@dataclass(frozen=True, slots=True)
class SortSpec:
    """An ordered list of sort fields; empty means "by record key"."""

    fields: tuple[SortField, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def to_wire(self) -> list[dict[str, str]]:
        """HEAD's array form, ``[{field, direction}]``."""
        return [{"field": f.field, "direction": f.direction} for f in self.fields]


def parse_sort(sort: Any) -> SortSpec:
    """Normalise either sort shape (or ``None``) into a :class:`SortSpec`.

    A repeated field keeps its first direction. Raises :class:`QueryError` when the shape
    or a direction is wrong.
    """
    if sort is None:
        return SortSpec()
    entries: list[tuple[Any, Any]] = []
    if isinstance(sort, Mapping):
        entries = list(sort.items())
    elif isinstance(sort, list | tuple):
        for i, item in enumerate(sort):
            if not isinstance(item, Mapping):
                raise QueryError(f"sort[{i}]: must be a map {{field, direction}}, got {item!r}")
            entries.append((item.get("field"), item.get("direction", "asc")))
    else:
        raise QueryError(
            "sort: must be an array of {field, direction} or a map of field to direction"
        )
    fields: list[SortField] = []
    seen: set[str] = set()
    for i, (name, direction) in enumerate(entries):
        if not isinstance(name, str) or not name:
            raise QueryError(f"sort[{i}].field: must be a non-empty string, got {name!r}")
        if direction is None:
            direction = "asc"
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise QueryError(f"sort[{i}].direction: must be 'asc' or 'desc', got {direction!r}")
        if name in seen:
            continue
        seen.add(name)
        fields.append(SortField(name, "desc" if direction.lower() == "desc" else "asc"))
    return SortSpec(tuple(fields))


class _DescText:
    """A string that sorts in reverse (the text part of a ``desc`` sort key)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __lt__(self, other: _DescText) -> bool:
        return other.text < self.text

    def __gt__(self, other: _DescText) -> bool:
        return other.text > self.text

    def __le__(self, other: _DescText) -> bool:
        return other.text <= self.text

    def __ge__(self, other: _DescText) -> bool:
        return other.text >= self.text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _DescText) and self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"desc({self.text!r})"


def rank(value: Any) -> tuple[int, Any]:
    """The ascending position of one field value: ``(kind rank, comparable)``."""
    t = type(value)
    if t is int or t is float:
        if value != value:
            return (_NAN, 0)
        return (_NUMBER, value)
    if t is str:
        return (_STRING, value)
    if value is None:
        return (_NULL, 0)
    if t is bool:
        return (_BOOL, value)
    if isinstance(value, bool):
        return (_BOOL, bool(value))
    if isinstance(value, int | float):
        return (_NAN, 0) if math.isnan(value) else (_NUMBER, value)
    if isinstance(value, str):
        return (_STRING, str(value))
    return (_OTHER, _canonical_text(value))


def rank_desc(value: Any) -> tuple[int, Any]:
    """The descending position: the exact reverse of :func:`rank`.

    Kinds and numbers are negated, so numeric ``desc`` sorts compare plain tuples; only text
    needs a wrapper.
    """
    kind, comparable = rank(value)
    if kind == _NUMBER:
        return (-kind, -comparable)
    if kind in (_STRING, _OTHER):
        return (-kind, _DescText(comparable))
    if kind == _BOOL:
        return (-kind, -int(comparable))
    return (-kind, 0)


def _canonical_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def field_rank(value: Any, descending: bool) -> tuple[int, Any]:
    """One component of a sort key: the rank, reversed for ``desc``."""
    return rank_desc(value) if descending else rank(value)


def sort_key(spec: SortSpec) -> SortKeyFn:
    """``(key, value) -> tuple`` ordering rows by ``spec`` then by key ascending."""
    if not spec.fields:
        return _key_only
    getters = tuple((field_getter(f.field), f.descending) for f in spec.fields)
    if len(getters) == 1:
        get, desc = getters[0]
        if desc:
            return lambda key, value: (rank_desc(get(key, value)), key)
        return lambda key, value: (rank(get(key, value)), key)

    def multi(key: str, value: Any) -> tuple[Any, ...]:
        parts: list[Any] = [field_rank(get(key, value), desc) for get, desc in getters]
        parts.append(key)
        return tuple(parts)

    return multi


def key_from_values(spec: SortSpec, values: Sequence[Any], key: str) -> tuple[Any, ...]:
    """The sort key of a row known only by its sort-field values (a cursor position)."""
    parts: list[Any] = [
        field_rank(v, f.descending) for f, v in zip(spec.fields, values, strict=True)
    ]
    parts.append(key)
    return tuple(parts)


def sort_values(spec: SortSpec, key: str, value: Any) -> list[Any]:
    """The values of the sort fields of one row (``None`` when missing)."""
    return [field_getter(f.field)(key, value) for f in spec.fields]


def _key_only(key: str, value: Any) -> tuple[Any, ...]:
    return (key,)
