"""DAGs as data: what a planner produces, what travels to storage nodes, what a caller submits.

A :class:`DagSpec` names each vertex's processor *kind* and its parameters (plain MsgPack-able
values) instead of holding factories, plus a *placement*: ``storage`` vertices run on every
storage node over the partitions it holds, ``coordinator`` vertices run once on the coordinator.
:meth:`DagSpec.split` cuts a spec along the edges that cross from storage to coordinator; each
such edge becomes an output port of the fragment and an input port of the coordinator's part.
:func:`libs.dag.registry.build_dag` turns a spec into a runnable :class:`~libs.dag.model.Dag`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.dag.model import DEFAULT_QUEUE_SIZE, DagError, Routing


class Placement(enum.Enum):
    STORAGE = "storage"
    COORDINATOR = "coordinator"


RESULT_PORT = "result"


@dataclass(frozen=True, slots=True)
class VertexSpec:
    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    parallelism: int = 1
    placement: Placement = Placement.COORDINATOR

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": dict(self.params),
            "parallelism": self.parallelism,
            "placement": self.placement.value,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VertexSpec:
        return cls(
            str(d["name"]),
            str(d["kind"]),
            dict(d.get("params") or {}),
            int(d.get("parallelism") or 1),
            Placement(d.get("placement") or Placement.COORDINATOR.value),
        )


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    source: str
    target: str
    source_ordinal: int = 0
    target_ordinal: int = 0
    routing: Routing = Routing.LOCAL
    key_fields: tuple[str, ...] = ()
    priority: int = 0
    queue_size: int = DEFAULT_QUEUE_SIZE

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "source_ordinal": self.source_ordinal,
            "target_ordinal": self.target_ordinal,
            "routing": self.routing.value,
            "key_fields": list(self.key_fields),
            "priority": self.priority,
            "queue_size": self.queue_size,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EdgeSpec:
        return cls(
            str(d["source"]),
            str(d["target"]),
            int(d.get("source_ordinal") or 0),
            int(d.get("target_ordinal") or 0),
            Routing(d.get("routing") or Routing.LOCAL.value),
            tuple(d.get("key_fields") or ()),
            int(d.get("priority") or 0),
            int(d.get("queue_size") or DEFAULT_QUEUE_SIZE),
        )


@dataclass(frozen=True, slots=True)
class PortSpec:
    """An exchange between a fragment and the coordinator: port ``name`` carries what the
    fragment's ``source`` vertex emits into the coordinator's ``target`` vertex."""

    name: str
    source: str
    target: str
    source_ordinal: int = 0
    target_ordinal: int = 0
    priority: int = 0
    routing: Routing = Routing.LOCAL
    key_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DagSpec:
    vertices: tuple[VertexSpec, ...]
    edges: tuple[EdgeSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "vertices": [v.to_dict() for v in self.vertices],
            "edges": [e.to_dict() for e in self.edges],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DagSpec:
        return cls(
            tuple(VertexSpec.from_dict(v) for v in d.get("vertices") or ()),
            tuple(EdgeSpec.from_dict(e) for e in d.get("edges") or ()),
        )

    def vertex(self, name: str) -> VertexSpec:
        for v in self.vertices:
            if v.name == name:
                return v
        raise DagError(f"no vertex {name!r}")

    def sinks(self) -> list[str]:
        """Vertices with no outbound edge."""
        has_out = {e.source for e in self.edges}
        return [v.name for v in self.vertices if v.name not in has_out]

    def split(self) -> tuple[DagSpec, DagSpec, tuple[PortSpec, ...]]:
        """``(fragment, coordinator part, exchanges)``.

        Storage vertices may only feed storage vertices or the coordinator (never the other way
        round); the coordinator part has exactly one sink, whose output is the job's result.
        """
        storage = {v.name for v in self.vertices if v.placement is Placement.STORAGE}
        for e in self.edges:
            if e.source not in storage and e.target in storage:
                raise DagError(
                    f"edge {e.source!r} -> {e.target!r}: a coordinator vertex cannot feed a "
                    "storage vertex"
                )
        frag_edges = tuple(e for e in self.edges if e.source in storage and e.target in storage)
        coord_edges = tuple(
            e for e in self.edges if e.source not in storage and e.target not in storage
        )
        ports = tuple(
            PortSpec(
                f"x{i}",
                e.source,
                e.target,
                e.source_ordinal,
                e.target_ordinal,
                e.priority,
                e.routing,
                e.key_fields,
            )
            for i, e in enumerate(
                x for x in self.edges if x.source in storage and x.target not in storage
            )
        )
        fragment = DagSpec(tuple(v for v in self.vertices if v.name in storage), frag_edges)
        coordinator = DagSpec(tuple(v for v in self.vertices if v.name not in storage), coord_edges)
        if storage:
            fed = {p.source for p in ports} | {e.source for e in frag_edges}
            dangling = sorted(storage - fed)
            if dangling:
                raise DagError(f"storage vertices {dangling} lead nowhere")
        coord_sinks = [n for n in coordinator.sinks() if n not in {p.source for p in ports}]
        if len(coord_sinks) != 1:
            raise DagError(
                f"the coordinator part needs exactly one sink vertex, found {coord_sinks or 'none'}"
            )
        return fragment, coordinator, ports
