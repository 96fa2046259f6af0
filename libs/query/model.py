"""The normalised query: :class:`Query` and :func:`parse_query` (PROTOCOL.md 6.1).

``parse_query`` validates a ``QUERY_SUB`` ``query`` map once — filter, sort, limit, cursor,
GROUP BY, aggregations, projection — and compiles the filter and the sort key, so everything
downstream works with typed objects. Unknown keys are ignored; wrong types raise
:class:`QueryError` with a message naming the offending key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from libs.query.cursor import filter_hash, sort_hash
from libs.query.errors import QueryError
from libs.query.predicate import Filter, compile_filter
from libs.query.sorting import SortKeyFn, SortSpec, parse_sort, sort_key

AggregateFunc = Literal["count", "sum", "min", "max", "avg"]
AGGREGATE_FUNCS: Final = ("count", "sum", "min", "max", "avg")


@dataclass(frozen=True, slots=True)
class Aggregation:
    """One requested aggregate: ``count`` (field ignored) or ``sum``/``min``/``max``/``avg``."""

    func: AggregateFunc
    field: str | None = None

    @property
    def output_name(self) -> str | None:
        """The key it adds to a group row (``count`` adds none beyond ``__count``)."""
        if self.func == "count" or self.field is None:
            return None
        return f"__{self.func}_{self.field}"


@dataclass(frozen=True, slots=True)
class Query:
    """A validated query with its compiled filter and sort key."""

    predicate: Mapping[str, Any] | None = None
    where: Mapping[str, Any] | None = None
    sort: SortSpec = field(default_factory=SortSpec)
    limit: int | None = None
    cursor: str | None = None
    group_by: tuple[str, ...] = ()
    aggregations: tuple[Aggregation, ...] = ()
    fields: tuple[str, ...] | None = None
    filter: Filter = field(default=compile_filter(), compare=False, repr=False)
    key_of: SortKeyFn = field(default=sort_key(SortSpec()), compare=False, repr=False)
    predicate_hash: int = field(default=0, compare=False, repr=False)
    sort_hash: int = field(default=0, compare=False, repr=False)

    @property
    def bounded(self) -> bool:
        """True when a ``limit`` makes this a top-N window."""
        return self.limit is not None


def parse_query(
    payload_query: Mapping[str, Any] | None,
    fields: Sequence[str] | None = None,
    *,
    principal: Mapping[str, Any] | None = None,
) -> Query:
    """Validate and normalise a ``QUERY_SUB`` ``query`` map.

    ``fields`` is ``payload.fields`` (the projection); when it is ``None`` the copy the SDK
    puts in ``query.fields`` is used. ``principal`` is what ``valueRef: "auth.*"`` resolves
    against.
    """
    if payload_query is None:
        payload_query = {}
    if not isinstance(payload_query, Mapping):
        raise QueryError(f"query: must be a map, got {type(payload_query).__name__}")
    q = payload_query

    predicate = q.get("predicate")
    if predicate is not None and not isinstance(predicate, Mapping):
        raise QueryError("query.predicate: must be a predicate node (a map)")
    where = q.get("where")
    if where is not None and not isinstance(where, Mapping):
        raise QueryError("query.where: must be a map of field to value")
    compiled = compile_filter(predicate, where, principal=principal)

    spec = parse_sort(q.get("sort"))
    limit = _parse_limit(q.get("limit"))

    cursor = q.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise QueryError("query.cursor: must be the string from a previous nextCursor")

    group_by = _parse_names(q.get("groupBy"), "query.groupBy", allow_single=True)
    aggregations = _parse_aggregations(q.get("aggregations"))

    projection = fields if fields is not None else q.get("fields")
    parsed_fields = (
        None if projection is None else _parse_names(projection, "fields", allow_single=False)
    )

    return Query(
        predicate=predicate,
        where=where if predicate is None else None,
        sort=spec,
        limit=limit,
        cursor=cursor,
        group_by=group_by,
        aggregations=aggregations,
        fields=parsed_fields,
        filter=compiled,
        key_of=sort_key(spec),
        predicate_hash=filter_hash(predicate, where if predicate is None else None),
        sort_hash=sort_hash(spec),
    )


def _parse_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise QueryError(f"query.limit: must be a whole number, got {limit!r}")
    if isinstance(limit, float):
        if not limit.is_integer():
            raise QueryError(f"query.limit: must be a whole number, got {limit!r}")
        limit = int(limit)
    if limit < 0:
        raise QueryError(f"query.limit: must not be negative, got {limit}")
    return limit


def _parse_names(value: Any, where: str, *, allow_single: bool) -> tuple[str, ...]:
    if value is None:
        return ()
    if allow_single and isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise QueryError(f"{where}: must be an array of field names, got {value!r}")
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise QueryError(f"{where}[{i}]: must be a string field name, got {name!r}")
        if name not in names:
            names.append(name)
    return tuple(names)


def _parse_aggregations(value: Any) -> tuple[Aggregation, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise QueryError("query.aggregations: must be an array of {func, field}")
    out: list[Aggregation] = []
    for i, item in enumerate(value):
        where = f"query.aggregations[{i}]"
        if not isinstance(item, Mapping):
            raise QueryError(f"{where}: must be a map {{func, field}}, got {item!r}")
        func = item.get("func")
        if func not in AGGREGATE_FUNCS:
            raise QueryError(f"{where}.func: must be one of {', '.join(AGGREGATE_FUNCS)}")
        name = item.get("field")
        if name is not None and not isinstance(name, str):
            raise QueryError(f"{where}.field: must be a string field name, got {name!r}")
        if func != "count" and not name:
            raise QueryError(f"{where}.field: {func} needs a field")
        agg = Aggregation(func, name if func != "count" else None)
        if agg not in out:
            out.append(agg)
    return tuple(out)
