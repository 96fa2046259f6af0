"""The DAG executor for distributed queries and analytics jobs (after Hazelcast Jet's core).

- Model: ``Dag`` of ``Vertex``es (a processor factory and a local parallelism) joined by
  ``Edge``s routed ``Routing.LOCAL``/``ROUND_ROBIN``/``PARTITIONED``/``BROADCAST``/``ALL_TO_ONE``;
  input and output ports connect a DAG to its caller.
- Processors (``Processor`` protocol, ``BaseProcessor``): ``SourceP``, ``FilterP``, ``ProjectP``,
  ``MapP``, ``AggregateP`` (partial/combine/final/complete), ``SortP``, ``TopNP``, ``LimitP``,
  ``AfterP``, ``DistinctP``, ``HashJoinP``, ``CollectSinkP``, ``ForwardP``, ``DiscardP``.
- Execution: ``Job(dag).run()`` / ``collect()`` / ``status()``; bounded edges, cooperative tasks.
- Data: ``Batch`` of ``NumColumn``/``DictColumn``/``ObjColumn``; ``encode_batch``/``decode_batch``.
- Remote: ``QueryDagClient`` (the query_dag coordinator's API), ``QueryDagError``.
- Queries: ``compile_batch_filter``, ``plan_query``/``plan_job`` → ``QueryPlan`` with
  ``explain()``; ``DagSpec`` (data form, ``split()`` into fragment and coordinator parts);
  ``build_local``/``build_fragment``/``build_coordinator``; ``query_result``.
"""

from libs.dag.aggregate import AggMode, AggregateP, AggSpec
from libs.dag.batch import (
    TAG_COLUMN,
    VALUE_COLUMN,
    Batch,
    Column,
    DictColumn,
    NumColumn,
    ObjColumn,
    build_column,
    concat_batches,
)
from libs.dag.client import QueryDagClient, QueryDagError
from libs.dag.codec import decode_batch, encode_batch
from libs.dag.cursor import AfterP
from libs.dag.distinct import DistinctP
from libs.dag.executor import (
    InputChannel,
    Job,
    JobCancelled,
    JobFailed,
    JobState,
    JobStatus,
    JobTimedOut,
    OutputChannel,
    VertexStatus,
)
from libs.dag.filter import FilterP
from libs.dag.join import HashJoinP
from libs.dag.model import Dag, DagError, Edge, Routing, Vertex
from libs.dag.planner import JobQuery, QueryPlan, explain, plan_job, plan_query
from libs.dag.predicate import BatchFilter, compile_batch_filter
from libs.dag.processor import BaseProcessor, Inbox, Outbox, Processor, ProcessorContext
from libs.dag.project import MapP, ProjectP
from libs.dag.registry import SourceProvider, build_coordinator, build_fragment, build_local
from libs.dag.results import batch_rows, query_result
from libs.dag.sinks import CollectSinkP, DiscardP, ForwardP
from libs.dag.sort import LimitP, SortKey, SortP, TopNP
from libs.dag.source import BatchesSource, ColumnSource, RecordsSource, SourceP, columns_of
from libs.dag.spec import RESULT_PORT, DagSpec, EdgeSpec, Placement, PortSpec, VertexSpec
from libs.dag.values import MISSING

__all__ = [
    "MISSING",
    "RESULT_PORT",
    "TAG_COLUMN",
    "VALUE_COLUMN",
    "AfterP",
    "AggMode",
    "AggSpec",
    "AggregateP",
    "BaseProcessor",
    "Batch",
    "BatchFilter",
    "BatchesSource",
    "CollectSinkP",
    "Column",
    "ColumnSource",
    "Dag",
    "DagError",
    "DagSpec",
    "DictColumn",
    "DiscardP",
    "DistinctP",
    "Edge",
    "EdgeSpec",
    "FilterP",
    "ForwardP",
    "HashJoinP",
    "Inbox",
    "InputChannel",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobQuery",
    "JobState",
    "JobStatus",
    "JobTimedOut",
    "LimitP",
    "MapP",
    "NumColumn",
    "ObjColumn",
    "Outbox",
    "OutputChannel",
    "Placement",
    "PortSpec",
    "Processor",
    "ProcessorContext",
    "ProjectP",
    "QueryDagClient",
    "QueryDagError",
    "QueryPlan",
    "RecordsSource",
    "Routing",
    "SortKey",
    "SortP",
    "SourceP",
    "SourceProvider",
    "TopNP",
    "Vertex",
    "VertexSpec",
    "VertexStatus",
    "batch_rows",
    "build_column",
    "build_coordinator",
    "build_fragment",
    "build_local",
    "columns_of",
    "compile_batch_filter",
    "concat_batches",
    "decode_batch",
    "encode_batch",
    "explain",
    "plan_job",
    "plan_query",
    "query_result",
]
