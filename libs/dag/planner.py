"""Query → DAG.

A query becomes per-partition fragments that run on the storage nodes next to the data —
Source (predicate and projection pushed down) → [After cursor] → partial Aggregate or local
TopN — and a final stage on the coordinator — combine/final Aggregate → [After] → TopN, Sort or
Limit → result. Only partial states or each node's top rows cross the network.

:func:`plan_query` follows ``QUERY_SUB`` semantics exactly as ``libs.query.evaluate`` defines them
(key order without a sort, the 10 000-row clamp, ``hasMore``, cursors, GROUP BY rows).
:func:`plan_job` plans an analytics job: the same language plus global aggregates (aggregations
without ``groupBy``), ``count_distinct``, and no row cap unless a limit is given.
:func:`explain` prints a plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from libs.dag.aggregate import AggSpec
from libs.dag.batch import VALUE_COLUMN
from libs.dag.model import Routing
from libs.dag.spec import DagSpec, EdgeSpec, Placement, VertexSpec
from libs.query import QueryError
from libs.query.evaluate import MAX_RESULTS, cursor_status
from libs.query.model import Query, parse_query
from libs.query.sorting import SortSpec, parse_sort

KEY_FIELD = "_key"
Shape = Literal["rows", "groups"]
AGGREGATE_BATCH_ROWS = 524_288
_S = Placement.STORAGE
_C = Placement.COORDINATOR


@dataclass(frozen=True, slots=True)
class JobQuery:
    """An analytics query: a ``QUERY_SUB``-style map plus global aggregates and
    ``count_distinct``; ``limit`` None returns every row."""

    predicate: Mapping[str, Any] | None = None
    where: Mapping[str, Any] | None = None
    group_by: tuple[str, ...] = ()
    aggregations: tuple[AggSpec, ...] = ()
    sort: SortSpec = field(default_factory=SortSpec)
    limit: int | None = None
    fields: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobQuery:
        if not isinstance(d, Mapping):
            raise QueryError("job: must be a map")
        aggs_raw = d.get("aggregations") or ()
        if not isinstance(aggs_raw, list | tuple):
            raise QueryError("job.aggregations: must be an array of {func, field}")
        aggs = []
        for i, a in enumerate(aggs_raw):
            if not isinstance(a, Mapping):
                raise QueryError(f"job.aggregations[{i}]: must be a map {{func, field}}")
            try:
                spec = AggSpec(
                    str(a.get("func")), a.get("field") if a.get("func") != "count" else None
                )
            except ValueError as exc:
                raise QueryError(f"job.aggregations[{i}]: {exc}") from None
            if spec not in aggs:
                aggs.append(spec)
        base = {k: v for k, v in d.items() if k != "aggregations"}
        q = parse_query(base)
        return cls(q.predicate, q.where, q.group_by, tuple(aggs), q.sort, q.limit, q.fields)


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """A planned query: the DAG, and how to read its result rows."""

    map_name: str
    spec: DagSpec
    shape: Shape
    page_size: int | None  # rows in the answer; the DAG fetches one more to tell hasMore
    sort: SortSpec = field(default_factory=SortSpec)
    fields: tuple[str, ...] | None = None
    cursor_status: str = "none"
    query: Query | None = field(default=None, compare=False)

    def explain(self) -> str:
        return explain(self)


def _sort_wire(spec: SortSpec) -> list[dict[str, str]]:
    return spec.to_wire()


def _sort_columns(spec: SortSpec) -> list[str]:
    return [f.field for f in spec.fields if f.field != KEY_FIELD]


def _fields(*groups: Sequence[str]) -> list[str]:
    out: dict[str, None] = {}
    for g in groups:
        out.update(dict.fromkeys(g))
    return list(out)


def _source(
    map_name: str, fields: Sequence[str], predicate: Any, where: Any, batch_rows: int | None
) -> VertexSpec:
    params: dict[str, Any] = {"map": map_name, "fields": list(fields)}
    if predicate is not None:
        params["predicate"] = predicate
    elif where is not None:
        params["where"] = where
    if batch_rows:
        params["batch_rows"] = batch_rows
    return VertexSpec("source", "source", params, 1, _S)


def _agg_wire(aggs: Sequence[AggSpec]) -> list[dict[str, Any]]:
    return [{"func": a.func, "field": a.field} for a in aggs]


def _chain(vertices: Sequence[VertexSpec]) -> tuple[EdgeSpec, ...]:
    edges = []
    for a, b in itertools.pairwise(vertices):
        cross = a.placement is _S and b.placement is _C
        edges.append(
            EdgeSpec(a.name, b.name, routing=Routing.ALL_TO_ONE if cross else Routing.LOCAL)
        )
    return tuple(edges)


def _build(
    map_name: str,
    *,
    predicate: Any,
    where: Any,
    group_by: Sequence[str],
    aggs: Sequence[AggSpec],
    global_aggregate: bool,
    sort: SortSpec,
    fetch: int | None,
    fields: Sequence[str] | None,
    after: Mapping[str, Any] | None,
    batch_rows: int | None,
) -> tuple[DagSpec, Shape]:
    keys = _sort_wire(sort)
    vs: list[VertexSpec] = []
    if group_by or global_aggregate:
        agg_fields = [a.field for a in aggs if a.field is not None]
        # only partial states leave the node: big batches, few Python-level steps
        rows = batch_rows or AGGREGATE_BATCH_ROWS
        source = _source(map_name, _fields(group_by, agg_fields), predicate, where, rows)
        vs.append(VertexSpec(source.name, source.kind, {**source.params, "keys": False}, 1, _S))
        common = {"group_by": list(group_by), "aggregations": _agg_wire(aggs)}
        vs.append(VertexSpec("partial", "aggregate", {**common, "mode": "partial"}, 1, _S))
        vs.append(VertexSpec("final", "aggregate", {**common, "mode": "final"}, 1, _C))
        if after is not None:
            vs.append(VertexSpec("after", "after", dict(after), 1, _C))
        if fetch is not None:
            vs.append(VertexSpec("topn", "topn", {"keys": keys, "n": fetch}, 1, _C))
        elif sort:
            vs.append(VertexSpec("sort", "sort", {"keys": keys}, 1, _C))
        return DagSpec(tuple(vs), _chain(vs)), "groups"
    out_cols = list(fields) if fields is not None else [VALUE_COLUMN]
    vs.append(
        _source(map_name, _fields(out_cols, _sort_columns(sort)), predicate, where, batch_rows)
    )
    if after is not None:
        vs.append(VertexSpec("after", "after", dict(after), 1, _S))
    if fetch is not None:
        vs.append(VertexSpec("local_topn", "topn", {"keys": keys, "n": fetch}, 1, _S))
        vs.append(VertexSpec("topn", "topn", {"keys": keys, "n": fetch}, 1, _C))
    elif sort:
        vs.append(VertexSpec("sort", "sort", {"keys": keys}, 1, _C))
    else:
        vs.append(VertexSpec("merge", "forward", {}, 1, _C))
    return DagSpec(tuple(vs), _chain(vs)), "rows"


def plan_query(
    map_name: str,
    query: Query,
    *,
    now_ms: int,
    max_results: int = MAX_RESULTS,
    batch_rows: int | None = None,
) -> QueryPlan:
    """The DAG answering a ``QUERY_SUB`` the way ``libs.query.evaluate`` would."""
    status, cursor = cursor_status(query, now_ms)
    after = None
    if cursor is not None:
        after = {
            "keys": _sort_wire(query.sort),
            "values": list(cursor.sort_values),
            "key": cursor.last_key,
        }
    cap = max_results if query.limit is None else min(query.limit, max_results)
    spec, shape = _build(
        map_name,
        predicate=query.predicate,
        where=query.where,
        group_by=query.group_by,
        aggs=[AggSpec(a.func, a.field) for a in query.aggregations],
        global_aggregate=False,
        sort=query.sort,
        fetch=cap + 1,
        fields=None,
        after=after,
        batch_rows=batch_rows,
    )
    return QueryPlan(
        map_name,
        spec,
        shape,
        cap,
        query.sort,
        None if query.group_by else query.fields,
        status,
        query,
    )


def plan_job(map_name: str, job: JobQuery, *, batch_rows: int | None = None) -> QueryPlan:
    """The DAG of an analytics job (see :class:`JobQuery`)."""
    spec, shape = _build(
        map_name,
        predicate=job.predicate,
        where=job.where,
        group_by=job.group_by,
        aggs=job.aggregations,
        global_aggregate=bool(job.aggregations) and not job.group_by,
        sort=job.sort,
        fetch=job.limit,
        fields=job.fields,
        after=None,
        batch_rows=batch_rows,
    )
    return QueryPlan(map_name, spec, shape, job.limit, job.sort, job.fields)


def _describe(v: VertexSpec) -> str:
    p = v.params
    k = v.kind
    if k == "source":
        parts = [f"map={p.get('map')!r}", f"columns={list(p.get('fields') or [])}"]
        if p.get("predicate") is not None:
            parts.append(f"predicate={p['predicate']}")
        if p.get("where") is not None:
            parts.append(f"where={p['where']}")
        return f"Source({', '.join(parts)})"
    if k == "aggregate":
        aggs = (
            ", ".join(f"{a['func']}({a['field'] or ''})" for a in p.get("aggregations") or ())
            or "count()"
        )
        return f"Aggregate[{p.get('mode')}](group_by={list(p.get('group_by') or [])}, {aggs})"
    if k in ("topn", "sort", "after"):
        keys = ", ".join(f"{s['field']} {s['direction']}" for s in p.get("keys") or ()) or "_key"
        extra = f", n={p['n']}" if "n" in p else ""
        if k == "after":
            extra = f", after=({p.get('values')}, key={p.get('key')!r})"
        name = {"topn": "TopN", "sort": "Sort", "after": "After"}[k]
        return f"{name}(by {keys} then _key{extra})"
    if k == "limit":
        return f"Limit(n={p['n']}, offset={p.get('offset', 0)})"
    if k == "forward":
        return "Merge"
    return f"{k.capitalize()}({dict(p)})"


def explain(plan: QueryPlan | DagSpec) -> str:
    """The plan as text: the fragment every storage node runs, the exchange, the final stage."""
    spec = plan.spec if isinstance(plan, QueryPlan) else plan
    lines = []
    if isinstance(plan, QueryPlan):
        lines.append(f"plan for map {plan.map_name!r}: {plan.shape}")
        if plan.page_size is not None:
            lines.append(f"  answer: at most {plan.page_size} rows (one more fetched for hasMore)")
        if plan.fields is not None:
            lines.append(f"  projection: {list(plan.fields)}")
    storage = [v for v in spec.vertices if v.placement is Placement.STORAGE]
    coordinator = [v for v in spec.vertices if v.placement is Placement.COORDINATOR]
    if storage:
        lines.append("fragment (every storage node, over the partitions it owns):")
        lines.extend(f"  {_describe(v)}" for v in storage)
    cross = [
        e
        for e in spec.edges
        if spec.vertex(e.source).placement is Placement.STORAGE
        and spec.vertex(e.target).placement is Placement.COORDINATOR
    ]
    for e in cross:
        lines.append(f"exchange: {e.source} -> {e.target} ({e.routing.value}), batches over gRPC")
    lines.append("coordinator:")
    lines.extend(f"  {_describe(v)}" for v in coordinator)
    lines.append("  -> result stream")
    return "\n".join(lines)


__all__ = ["JobQuery", "QueryPlan", "explain", "parse_sort", "plan_job", "plan_query"]
