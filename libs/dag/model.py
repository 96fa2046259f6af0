"""The DAG model: vertices that run processors, edges that route items between them.

A vertex names a processor factory and a local parallelism (how many processor instances run
it). An edge joins an outbound ordinal of one vertex to an inbound ordinal of another and says
how items are routed among the target's instances. Ports connect a DAG to the outside world: an
input port feeds items into a vertex ordinal, an output port carries a vertex's output to the
caller. The model is pure data plus factories; :mod:`libs.dag.executor` runs it.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from libs.dag.processor import Processor, ProcessorContext

ProcessorFactory = Callable[[ProcessorContext], Processor]

DEFAULT_QUEUE_SIZE = 4
"""Items (batches) an edge holds per target instance before the sender has to wait."""


class Routing(enum.Enum):
    """How an edge spreads items over the target vertex's instances."""

    LOCAL = "local"  # instance i feeds instance i mod p (one-to-one when parallelisms match)
    ROUND_ROBIN = "round-robin"  # each sender deals its items over every target instance
    PARTITIONED = "partitioned"  # rows go to the instance chosen by the hash of key fields
    BROADCAST = "broadcast"  # every item to every target instance
    ALL_TO_ONE = "all-to-one"  # every item to target instance 0


class DagError(ValueError):
    """A DAG that cannot run: unknown vertex, cycle, gap in the ordinals, bad parallelism."""


@dataclass(frozen=True, slots=True)
class Vertex:
    name: str
    factory: ProcessorFactory
    parallelism: int = 1
    kind: str = ""  # what the processor is, for explain() and status

    def __post_init__(self) -> None:
        if self.parallelism < 1:
            raise DagError(f"vertex {self.name!r}: parallelism must be at least 1")


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    source_ordinal: int = 0
    target_ordinal: int = 0
    routing: Routing = Routing.LOCAL
    key_fields: tuple[str, ...] = ()  # for PARTITIONED; empty = the record key
    priority: int = 0  # lower priorities are consumed to exhaustion first (hash-join build side)
    queue_size: int = DEFAULT_QUEUE_SIZE


@dataclass(frozen=True, slots=True)
class InputPort:
    name: str
    target: str
    target_ordinal: int = 0
    priority: int = 0
    queue_size: int = DEFAULT_QUEUE_SIZE


@dataclass(frozen=True, slots=True)
class OutputPort:
    name: str
    source: str
    source_ordinal: int = 0
    queue_size: int = DEFAULT_QUEUE_SIZE


@dataclass(slots=True)
class Dag:
    """Vertices, edges and ports; ``validate()`` checks it can run."""

    vertices: dict[str, Vertex] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    inputs: list[InputPort] = field(default_factory=list)
    outputs: list[OutputPort] = field(default_factory=list)

    def vertex(
        self, name: str, factory: ProcessorFactory, parallelism: int = 1, kind: str = ""
    ) -> Vertex:
        if name in self.vertices:
            raise DagError(f"duplicate vertex {name!r}")
        v = Vertex(name, factory, parallelism, kind or name)
        self.vertices[name] = v
        return v

    def edge(
        self,
        source: str,
        target: str,
        *,
        source_ordinal: int = 0,
        target_ordinal: int = 0,
        routing: Routing = Routing.LOCAL,
        key_fields: Sequence[str] = (),
        priority: int = 0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> Edge:
        e = Edge(
            source,
            target,
            source_ordinal,
            target_ordinal,
            routing,
            tuple(key_fields),
            priority,
            queue_size,
        )
        self.edges.append(e)
        return e

    def input(
        self,
        name: str,
        target: str,
        *,
        target_ordinal: int = 0,
        priority: int = 0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> InputPort:
        p = InputPort(name, target, target_ordinal, priority, queue_size)
        self.inputs.append(p)
        return p

    def output(
        self,
        name: str,
        source: str,
        *,
        source_ordinal: int = 0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> OutputPort:
        p = OutputPort(name, source, source_ordinal, queue_size)
        self.outputs.append(p)
        return p

    def chain(self, *names: str, routing: Routing = Routing.LOCAL) -> None:
        """Edges ``names[0] -> names[1] -> ...`` on ordinal 0."""
        for a, b in itertools.pairwise(names):
            self.edge(a, b, routing=routing)

    def inbound_ordinals(self, name: str) -> list[int]:
        ords = [e.target_ordinal for e in self.edges if e.target == name]
        ords += [p.target_ordinal for p in self.inputs if p.target == name]
        return sorted(ords)

    def outbound_ordinals(self, name: str) -> list[int]:
        ords = [e.source_ordinal for e in self.edges if e.source == name]
        ords += [p.source_ordinal for p in self.outputs if p.source == name]
        return sorted(ords)

    def topological_order(self) -> list[str]:
        indegree = {n: 0 for n in self.vertices}
        for e in self.edges:
            indegree[e.target] += 1
        ready = [n for n, d in indegree.items() if d == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for e in self.edges:
                if e.source == n:
                    indegree[e.target] -= 1
                    if indegree[e.target] == 0:
                        ready.append(e.target)
        if len(order) != len(self.vertices):
            raise DagError("the DAG has a cycle")
        return order

    def validate(self) -> None:
        if not self.vertices:
            raise DagError("the DAG has no vertices")
        names = set(self.vertices)
        for e in self.edges:
            for end in (e.source, e.target):
                if end not in names:
                    raise DagError(f"edge {e.source!r} -> {e.target!r}: unknown vertex {end!r}")
            if e.queue_size < 1:
                raise DagError(f"edge {e.source!r} -> {e.target!r}: queue_size must be >= 1")
        for p in self.inputs:
            if p.target not in names:
                raise DagError(f"input port {p.name!r}: unknown vertex {p.target!r}")
        for q in self.outputs:
            if q.source not in names:
                raise DagError(f"output port {q.name!r}: unknown vertex {q.source!r}")
        ports = [p.name for p in self.inputs] + [q.name for q in self.outputs]
        if len(ports) != len(set(ports)):
            raise DagError("port names must be unique")
        for n in names:
            for what, ords in (
                ("inbound", self.inbound_ordinals(n)),
                ("outbound", self.outbound_ordinals(n)),
            ):
                if ords != list(range(len(ords))):
                    raise DagError(f"vertex {n!r}: {what} ordinals must be 0..k-1, got {ords}")
        self.topological_order()
