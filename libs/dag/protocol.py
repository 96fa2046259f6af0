"""DAG specs and job counters ↔ their protobuf messages (``fragment.proto``)."""

from __future__ import annotations

from collections.abc import Iterable

import msgpack

from libs.dag.executor import VertexStatus
from libs.dag.model import DEFAULT_QUEUE_SIZE, DagError, Routing
from libs.dag.spec import DagSpec, EdgeSpec, Placement, VertexSpec
from topgun_rpc import fragment_pb2

_ROUTING_TO_PB = {
    Routing.LOCAL: fragment_pb2.ROUTING_LOCAL,
    Routing.ROUND_ROBIN: fragment_pb2.ROUTING_ROUND_ROBIN,
    Routing.PARTITIONED: fragment_pb2.ROUTING_PARTITIONED,
    Routing.BROADCAST: fragment_pb2.ROUTING_BROADCAST,
    Routing.ALL_TO_ONE: fragment_pb2.ROUTING_ALL_TO_ONE,
}
_ROUTING_FROM_PB = {int(v): k for k, v in _ROUTING_TO_PB.items()}
_PLACEMENT_TO_PB = {
    Placement.COORDINATOR: fragment_pb2.PLACEMENT_COORDINATOR,
    Placement.STORAGE: fragment_pb2.PLACEMENT_STORAGE,
}
_PLACEMENT_FROM_PB = {int(v): k for k, v in _PLACEMENT_TO_PB.items()}


def spec_to_pb(spec: DagSpec) -> fragment_pb2.DagSpec:
    return fragment_pb2.DagSpec(
        vertices=[
            fragment_pb2.VertexSpec(
                name=v.name,
                kind=v.kind,
                params=msgpack.packb(dict(v.params), use_bin_type=True),
                parallelism=v.parallelism,
                placement=_PLACEMENT_TO_PB[v.placement],
            )
            for v in spec.vertices
        ],
        edges=[
            fragment_pb2.EdgeSpec(
                source=e.source,
                target=e.target,
                source_ordinal=e.source_ordinal,
                target_ordinal=e.target_ordinal,
                routing=_ROUTING_TO_PB[e.routing],
                key_fields=list(e.key_fields),
                priority=e.priority,
                queue_size=e.queue_size,
            )
            for e in spec.edges
        ],
    )


def spec_from_pb(pb: fragment_pb2.DagSpec) -> DagSpec:
    """The spec of a DagSpec message; DagError for anything malformed."""
    vertices = []
    for v in pb.vertices:
        try:
            params = msgpack.unpackb(v.params, raw=False) if v.params else {}
        except Exception as exc:
            raise DagError(f"vertex {v.name!r}: params are not valid msgpack: {exc}") from None
        if not isinstance(params, dict):
            raise DagError(f"vertex {v.name!r}: params must be a msgpack map")
        placement = _PLACEMENT_FROM_PB.get(int(v.placement))
        if placement is None or not v.name or not v.kind:
            raise DagError(f"vertex {v.name!r}: needs a name, a kind and a known placement")
        vertices.append(VertexSpec(v.name, v.kind, params, max(1, v.parallelism), placement))
    edges = []
    for e in pb.edges:
        routing = _ROUTING_FROM_PB.get(int(e.routing))
        if routing is None:
            raise DagError(f"edge {e.source!r} -> {e.target!r}: unknown routing {e.routing}")
        edges.append(
            EdgeSpec(
                e.source,
                e.target,
                e.source_ordinal,
                e.target_ordinal,
                routing,
                tuple(e.key_fields),
                e.priority,
                e.queue_size or DEFAULT_QUEUE_SIZE,
            )
        )
    return DagSpec(tuple(vertices), tuple(edges))


def counters_to_pb(vertices: Iterable[VertexStatus]) -> list[fragment_pb2.VertexCounters]:
    return [
        fragment_pb2.VertexCounters(
            name=v.name,
            kind=v.kind,
            parallelism=v.parallelism,
            rows_in=v.rows_in,
            rows_out=v.rows_out,
            batches_in=v.batches_in,
            batches_out=v.batches_out,
            busy_ms=v.busy_ms,
        )
        for v in vertices
    ]


def merge_counters(
    into: dict[str, fragment_pb2.VertexCounters], more: Iterable[fragment_pb2.VertexCounters]
) -> None:
    """Add the counters of one fragment run to per-vertex totals (summed over nodes)."""
    for c in more:
        t = into.get(c.name)
        if t is None:
            t = into[c.name] = fragment_pb2.VertexCounters(
                name=c.name, kind=c.kind, parallelism=c.parallelism
            )
        t.rows_in += c.rows_in
        t.rows_out += c.rows_out
        t.batches_in += c.batches_in
        t.batches_out += c.batches_out
        t.busy_ms += c.busy_ms
