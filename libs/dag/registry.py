"""Processor kinds by name, and :class:`DagSpec` → runnable :class:`Dag`.

Kinds and their parameters (all MsgPack-able):

==============  ===============================================================================
``source``      ``map``, ``fields`` (columns to emit), ``predicate`` / ``where`` (pushed down),
                ``batch_rows``, ``keys`` (False: placeholder record keys, for aggregations)
``filter``      ``predicate`` or ``where``
``project``     ``fields``, ``rename`` (map old → new)
``aggregate``   ``group_by``, ``aggregations`` ``[{func, field}]``, ``mode`` (partial, combine,
                final, complete)
``sort``        ``keys`` ``[{field, direction}]``
``topn``        ``keys``, ``n``
``after``       ``keys``, ``values``, ``key``: rows strictly after a cursor position
``limit``       ``n``, ``offset``
``distinct``    ``fields``
``hash_join``   ``left_on``, ``right_on``, ``left_prefix``, ``right_prefix``
``forward``     —
``discard``     —
==============  ===============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from libs.dag.aggregate import AggMode, AggregateP, AggSpec
from libs.dag.cursor import AfterP
from libs.dag.distinct import DistinctP
from libs.dag.filter import FilterP
from libs.dag.join import HashJoinP
from libs.dag.model import Dag, DagError, ProcessorFactory
from libs.dag.predicate import compile_batch_filter
from libs.dag.processor import ProcessorContext
from libs.dag.project import ProjectP
from libs.dag.sinks import DiscardP, ForwardP
from libs.dag.sort import LimitP, SortKey, SortP, TopNP
from libs.dag.source import DEFAULT_BATCH_ROWS, ColumnSource, SourceP
from libs.dag.spec import RESULT_PORT, DagSpec, PortSpec, VertexSpec
from libs.query import QueryError

SourceProvider = Callable[[Mapping[str, Any]], ColumnSource]
"""Given a source vertex's parameters (``map`` names the map), the records it scans."""

KINDS = (
    "source",
    "filter",
    "project",
    "aggregate",
    "sort",
    "topn",
    "after",
    "limit",
    "distinct",
    "hash_join",
    "forward",
    "discard",
)


def sort_keys(raw: Any) -> list[SortKey]:
    keys = []
    for k in raw or ():
        if isinstance(k, Mapping):
            keys.append(SortKey(str(k["field"]), str(k.get("direction", "asc")).lower() == "desc"))
        else:
            name, direction = k
            keys.append(SortKey(str(name), str(direction).lower() == "desc"))
    return keys


def agg_specs(raw: Any) -> list[AggSpec]:
    return [AggSpec(str(a["func"]), a.get("field")) for a in raw or ()]


def _names(raw: Any) -> list[str]:
    return [str(f) for f in raw or ()]


def processor_factory(
    v: VertexSpec,
    *,
    sources: SourceProvider | None = None,
    principal: Mapping[str, Any] | None = None,
) -> ProcessorFactory:
    """A factory for the processors of one vertex; raises DagError for bad parameters."""
    p = v.params
    try:
        return _factory(v.kind, p, sources, principal)
    except DagError:
        raise
    except (KeyError, TypeError, ValueError, QueryError) as exc:
        raise DagError(f"vertex {v.name!r} ({v.kind}): bad parameters: {exc}") from exc


def _factory(
    kind: str,
    p: Mapping[str, Any],
    sources: SourceProvider | None,
    principal: Mapping[str, Any] | None,
) -> ProcessorFactory:
    if kind == "source":
        if sources is None:
            raise DagError("a source vertex needs a source provider (it runs on storage nodes)")
        flt = None
        if p.get("predicate") is not None or p.get("where") is not None:
            flt = compile_batch_filter(p.get("predicate"), p.get("where"), principal=principal)
        fields = _names(p.get("fields"))
        rows = int(p.get("batch_rows") or DEFAULT_BATCH_ROWS)
        with_keys = bool(p.get("keys", True))
        src_params = dict(p)

        def make_source(ctx: ProcessorContext) -> SourceP:
            return SourceP(sources(src_params), fields, flt, batch_rows=rows, keys=with_keys)

        return make_source
    if kind == "filter":
        flt2 = compile_batch_filter(p.get("predicate"), p.get("where"), principal=principal)
        return lambda ctx: FilterP(flt2)
    if kind == "project":
        fields = _names(p["fields"])
        rename = {str(a): str(b) for a, b in (p.get("rename") or {}).items()}
        return lambda ctx: ProjectP(fields, rename)
    if kind == "aggregate":
        group_by = _names(p.get("group_by"))
        aggs = agg_specs(p.get("aggregations"))
        mode = AggMode(p.get("mode", "complete"))
        return lambda ctx: AggregateP(group_by, aggs, mode)
    if kind == "sort":
        keys = sort_keys(p.get("keys"))
        return lambda ctx: SortP(keys)
    if kind == "topn":
        keys = sort_keys(p.get("keys"))
        n = int(p["n"])
        return lambda ctx: TopNP(keys, n)
    if kind == "after":
        keys = sort_keys(p.get("keys"))
        values = list(p.get("values") or ())
        key = str(p["key"])
        return lambda ctx: AfterP(keys, values, key)
    if kind == "limit":
        n, offset = int(p["n"]), int(p.get("offset") or 0)
        return lambda ctx: LimitP(n, offset)
    if kind == "distinct":
        fields = _names(p["fields"])
        return lambda ctx: DistinctP(fields)
    if kind == "hash_join":
        args = (
            str(p["left_on"]),
            str(p["right_on"]),
            str(p.get("left_prefix", "left.")),
            str(p.get("right_prefix", "right.")),
        )
        return lambda ctx: HashJoinP(*args)
    if kind == "forward":
        return lambda ctx: ForwardP()
    if kind == "discard":
        return lambda ctx: DiscardP()
    raise DagError(f"unknown processor kind {kind!r}; known: {', '.join(KINDS)}")


def _add_vertices(
    dag: Dag,
    spec: DagSpec,
    sources: SourceProvider | None,
    principal: Mapping[str, Any] | None,
) -> None:
    for v in spec.vertices:
        dag.vertex(
            v.name,
            processor_factory(v, sources=sources, principal=principal),
            v.parallelism,
            v.kind,
        )
    for e in spec.edges:
        dag.edge(
            e.source,
            e.target,
            source_ordinal=e.source_ordinal,
            target_ordinal=e.target_ordinal,
            routing=e.routing,
            key_fields=e.key_fields,
            priority=e.priority,
            queue_size=e.queue_size,
        )


def build_local(
    spec: DagSpec,
    *,
    sources: SourceProvider | None = None,
    principal: Mapping[str, Any] | None = None,
) -> Dag:
    """The whole spec in one process (placements ignored); the sink feeds port ``result``."""
    dag = Dag()
    _add_vertices(dag, spec, sources, principal)
    sinks = spec.sinks()
    if len(sinks) != 1:
        raise DagError(f"a DAG needs exactly one sink vertex, found {sinks or 'none'}")
    dag.output(RESULT_PORT, sinks[0])
    dag.validate()
    return dag


def build_fragment(
    fragment: DagSpec,
    ports: Sequence[PortSpec],
    *,
    sources: SourceProvider,
    principal: Mapping[str, Any] | None = None,
) -> Dag:
    """A storage node's part: its vertices, with one output port per exchange."""
    dag = Dag()
    _add_vertices(dag, fragment, sources, principal)
    for port in ports:
        dag.output(port.name, port.source, source_ordinal=port.source_ordinal)
    dag.validate()
    return dag


def build_coordinator(
    coordinator: DagSpec,
    ports: Sequence[PortSpec],
    *,
    principal: Mapping[str, Any] | None = None,
) -> Dag:
    """The coordinator's part: one receiving vertex per exchange (fed through input port
    ``port.name`` by every node's fragment), and the sink on port ``result``."""
    dag = Dag()
    _add_vertices(dag, coordinator, None, principal)
    for port in ports:
        recv = f"recv:{port.name}"
        dag.vertex(recv, lambda ctx: ForwardP(), 1, "receive")
        dag.input(port.name, recv)
        dag.edge(
            recv,
            port.target,
            target_ordinal=port.target_ordinal,
            routing=port.routing,
            key_fields=port.key_fields,
            priority=port.priority,
        )
    sinks = [n for n in coordinator.sinks()]
    dag.output(RESULT_PORT, sinks[0])
    dag.validate()
    return dag
