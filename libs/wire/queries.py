"""Live queries: ``QUERY_SUB`` and ``QUERY_UNSUB`` (PROTOCOL.md section 6).

The predicate tree is checked for shape only (maps with a string ``op``); evaluating it is
libs.query's job. ``sort`` arrives as an array of ``{field, direction}`` (HEAD SDK) or a map of
field to direction (schema, Feb SDK); both become a tuple of ``(field, "asc" | "desc")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.wire.errors import BadFrame
from libs.wire.fields import (
    bad,
    opt_int,
    opt_str,
    opt_str_list,
    payload,
    req_str,
)

SortSpec = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Aggregation:
    func: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """A live query. ``predicate`` is the raw predicate tree (maps with ``op``, ``attribute``,
    ``value``, ``children``, ``valueRef``), checked for shape; ``sort`` is always a tuple of
    ``(field, "asc" | "desc")`` whichever form the client sent."""

    where: Mapping[str, Any] | None = None
    predicate: Mapping[str, Any] | None = None
    sort: SortSpec = ()
    limit: int | None = None
    cursor: str | None = None
    group_by: tuple[str, ...] | None = None
    aggregations: tuple[Aggregation, ...] | None = None


@dataclass(frozen=True, slots=True)
class QuerySub:
    query_id: str
    map_name: str
    query: Query
    fields: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class QueryUnsub:
    query_id: str


AGGREGATE_FUNCS = frozenset({"count", "sum", "min", "max", "avg"})


def _direction(value: Any, field: str) -> str:
    if type(value) is str:
        d = value.lower()
        if d in ("asc", "desc"):
            return d
    raise BadFrame(f"{field} must be 'asc' or 'desc', got {value!r}")


def parse_sort(value: Any, field: str = "sort") -> SortSpec:
    """Both sort shapes: ``[{field, direction}]`` (HEAD SDK) and ``{field: direction}`` (Feb)."""
    if value is None:
        return ()
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise bad(f"{field}[{i}]", "a map {field, direction}", item)
            name = item.get("field")
            if type(name) is not str:
                raise bad(f"{field}[{i}].field", "a string", name)
            direction = item.get("direction")
            out.append(
                (
                    name,
                    "asc"
                    if direction is None
                    else _direction(direction, f"{field}[{i}].direction"),
                )
            )
        return tuple(out)
    if isinstance(value, Mapping):
        out = []
        for name, direction in value.items():
            if type(name) is not str:
                raise bad(f"{field} key", "a string", name)
            out.append((name, _direction(direction, f"{field}.{name}")))
        return tuple(out)
    raise bad(field, "an array of {field, direction} or a map of field to direction", value)


def check_predicate(node: Any, field: str = "predicate") -> Mapping[str, Any]:
    """Check the shape of a predicate tree: maps with a string ``op``; ``children`` an array of
    nodes; ``attribute`` and ``valueRef`` strings. Unknown ops are accepted."""
    if not isinstance(node, Mapping):
        raise bad(field, "a predicate map {op, ...}", node)
    op = node.get("op")
    if type(op) is not str:
        raise bad(f"{field}.op", "a string", op)
    attribute = node.get("attribute")
    if attribute is not None and type(attribute) is not str:
        raise bad(f"{field}.attribute", "a string", attribute)
    value_ref = node.get("valueRef")
    if value_ref is not None and type(value_ref) is not str:
        raise bad(f"{field}.valueRef", "a string", value_ref)
    children = node.get("children")
    if children is not None:
        if not isinstance(children, list):
            raise bad(f"{field}.children", "an array of predicates", children)
        for i, child in enumerate(children):
            check_predicate(child, f"{field}.children[{i}]")
    return node


def parse_query(value: Any, field: str = "query") -> Query:
    if value is None:
        return Query()
    if not isinstance(value, Mapping):
        raise bad(field, "a map", value)
    where = value.get("where")
    if where is not None and not isinstance(where, Mapping):
        raise bad(f"{field}.where", "a map of field to value", where)
    predicate = value.get("predicate")
    if predicate is not None:
        check_predicate(predicate, f"{field}.predicate")
    limit = opt_int(value, "limit", f"{field}.limit")
    if limit is not None and limit < 0:
        raise BadFrame(f"{field}.limit must not be negative, got {limit}")
    cursor = value.get("cursor")
    if cursor is not None and type(cursor) is not str:
        raise bad(f"{field}.cursor", "a string", cursor)
    aggregations = None
    raw_aggs = value.get("aggregations")
    if raw_aggs is not None:
        if not isinstance(raw_aggs, list):
            raise bad(f"{field}.aggregations", "an array of {func, field?}", raw_aggs)
        aggs = []
        for i, agg in enumerate(raw_aggs):
            where_i = f"{field}.aggregations[{i}]"
            if not isinstance(agg, Mapping):
                raise bad(where_i, "a map {func, field?}", agg)
            func = agg.get("func")
            if func not in AGGREGATE_FUNCS:
                raise BadFrame(
                    f"{where_i}.func must be one of count, sum, min, max, avg, got {func!r}"
                )
            aggs.append(Aggregation(func, opt_str(agg, "field", f"{where_i}.field")))
        aggregations = tuple(aggs)
    return Query(
        where,
        predicate,
        parse_sort(value.get("sort"), f"{field}.sort"),
        limit,
        cursor,
        opt_str_list(value, "groupBy", f"{field}.groupBy"),
        aggregations,
    )


def parse_query_sub(msg: Mapping[Any, Any]) -> QuerySub:
    """``QUERY_SUB {payload: {queryId, mapName, query, fields?}}``; ``query.fields`` is used
    when ``payload.fields`` is absent."""
    body = payload(msg)
    query_raw = body.get("query")
    query = parse_query(query_raw, "payload.query")
    fields = opt_str_list(body, "fields", "payload.fields")
    if fields is None and isinstance(query_raw, Mapping):
        fields = opt_str_list(query_raw, "fields", "payload.query.fields")
    return QuerySub(
        req_str(body, "queryId", "payload.queryId"),
        req_str(body, "mapName", "payload.mapName"),
        query,
        fields,
    )


def parse_query_unsub(msg: Mapping[Any, Any]) -> QueryUnsub:
    return QueryUnsub(req_str(payload(msg), "queryId", "payload.queryId"))


__all__ = [
    "AGGREGATE_FUNCS",
    "Aggregation",
    "Query",
    "QuerySub",
    "QueryUnsub",
    "SortSpec",
    "check_predicate",
    "parse_query",
    "parse_query_sub",
    "parse_query_unsub",
    "parse_sort",
]
