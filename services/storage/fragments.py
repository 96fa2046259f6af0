"""The Fragments gRPC service: run the storage vertices of a query DAG next to the data.

The coordinator sends a job's whole DAG and the partitions to read; this node checks it owns
them (or, for a failover read, holds them as a backup), builds the DAG's storage part (``DagSpec.split``) with sources reading the node's column
cache (:mod:`services.storage.columns`), runs it with libs/dag's executor and streams the batches
of every exchange port back. The last message carries the per-vertex counters.

Statuses: FAILED_PRECONDITION for partitions this node does not hold (the table moved: the
coordinator retries elsewhere), INVALID_ARGUMENT for a DAG or predicate that cannot run,
DEADLINE_EXCEEDED when the fragment outlives its timeout, ABORTED when a processor fails,
CANCELLED when the job is cancelled. A cancelled call cancels its fragment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import msgpack

from libs.dag import (
    DagError,
    Job,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    build_fragment,
)
from libs.dag.codec import encode_batch_parts
from libs.dag.protocol import counters_to_pb, spec_from_pb
from libs.query import QueryError
from services.storage.columns import CachedMapSource, ColumnCache
from services.storage.node import StorageNode
from topgun_rpc import fragment_pb2, fragment_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0
_STREAM_QUEUE = 4  # result batches buffered between the job's ports and the gRPC stream
_PORT_DONE = object()


class FragmentServicer(fragment_pb2_grpc.FragmentsServicer):
    def __init__(self, node: StorageNode, cache: ColumnCache | None = None) -> None:
        self.node = node
        self.cache = cache or ColumnCache(node.store)
        self._running: dict[str, set[asyncio.Task[None]]] = {}

    async def RunFragment(
        self, request: fragment_pb2.FragmentRequest, context: Any
    ) -> AsyncIterator[fragment_pb2.FragmentResult]:
        node_id = self.node.node_id
        parts = list(request.partitions)
        held = self.node.held_mask if request.allow_backups else self.node.primary_mask
        not_held = [p for p in parts if not (0 <= p < len(held)) or not held[p]]
        if not_held:  # (reads go on while a node is fenced, as its scans do: fencing guards writes)
            what = "hold" if request.allow_backups else "own"
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"node {node_id} does not {what} partitions {not_held[:10]}",
            )
        try:
            principal = msgpack.unpackb(request.principal, raw=False) if request.principal else None
            spec = spec_from_pb(request.dag)
            fragment, _, ports = spec.split()
            now_ms = request.now_ms or int(time.time() * 1000)
            sources: list[CachedMapSource] = []

            def source(params: Any) -> CachedMapSource:
                s = self.cache.source(str(params["map"]), parts, now_ms)
                sources.append(s)
                return s

            dag = build_fragment(fragment, ports, sources=source, principal=principal)
        except (DagError, QueryError, ValueError, KeyError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot run the fragment: {exc}")
            raise  # unreachable: abort raises
        job = Job(dag, name=f"{request.job_id}/{request.fragment_id or node_id}")
        timeout = request.timeout_ms / 1000.0 if request.timeout_ms else DEFAULT_TIMEOUT_S
        out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(_STREAM_QUEUE)

        async def drain(port: str) -> None:
            async for item in job.output(port):
                await out.put((port, item))
            await out.put((port, _PORT_DONE))

        async def drain_in_priority_order() -> None:
            # a lower priority's ports go out completely first; the other ports' producers
            # wait meanwhile (bounded), as the coordinator's consumer reads them in that order
            for prio in sorted({p.priority for p in ports}):
                async with asyncio.TaskGroup() as tg:
                    for p in ports:
                        if p.priority == prio:
                            tg.create_task(drain(p.name))

        async def run() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(job.run(timeout))
                tg.create_task(drain_in_priority_order())

        task = asyncio.create_task(run(), name=f"fragment {job.name}")
        self._running.setdefault(request.job_id, set()).add(task)
        try:
            async for port, batch in _until_done(out, task):
                if batch is _PORT_DONE:
                    yield fragment_pb2.FragmentResult(port=port, port_done=True, node_id=node_id)
                    continue
                for data in encode_batch_parts(batch):
                    yield fragment_pb2.FragmentResult(port=port, batch=data, node_id=node_id)
            if task.cancelled():
                await context.abort(
                    grpc.StatusCode.CANCELLED, f"job {request.job_id} was cancelled"
                )
            error = _job_error(task.exception())
            if isinstance(error, JobTimedOut):
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(error))
            elif isinstance(error, JobFailed):
                await context.abort(grpc.StatusCode.ABORTED, str(error))
            elif isinstance(error, JobCancelled):
                await context.abort(
                    grpc.StatusCode.CANCELLED, f"job {request.job_id} was cancelled"
                )
            elif error is not None:
                log.exception("fragment %s failed", job.name, exc_info=error)
                await context.abort(grpc.StatusCode.INTERNAL, f"fragment failed: {error!r}")
            yield fragment_pb2.FragmentResult(
                done=True,
                node_id=node_id,
                vertices=counters_to_pb(job.status().vertices),
                rows_scanned=sum(s.rows_scanned for s in sources),
            )
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            tasks = self._running.get(request.job_id)
            if tasks is not None:
                tasks.discard(task)
                if not tasks:
                    del self._running[request.job_id]

    async def CancelFragment(
        self, request: fragment_pb2.CancelFragmentRequest, context: Any
    ) -> fragment_pb2.CancelFragmentResponse:
        tasks = self._running.get(request.job_id, set())
        if request.dry_run:
            return fragment_pb2.CancelFragmentResponse(cancelled=len(tasks))
        for t in tasks:
            t.cancel()
        if tasks:
            log.info("cancelled %d fragment(s) of job %s", len(tasks), request.job_id)
        return fragment_pb2.CancelFragmentResponse(cancelled=len(tasks))


async def _until_done(
    out: asyncio.Queue[tuple[str, Any]], task: asyncio.Task[None]
) -> AsyncIterator[tuple[str, Any]]:
    """Items from ``out`` until ``task`` (their producer) is done and ``out`` is empty."""
    while True:
        if not out.empty():
            yield out.get_nowait()
            continue
        if task.done():
            return
        getter = asyncio.ensure_future(out.get())
        try:
            await asyncio.wait([getter, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            yield getter.result()


def _job_error(exc: BaseException | None) -> BaseException | None:
    """The job error inside a task group's exception group, or the exception itself."""
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            inner = _job_error(e)
            if isinstance(inner, JobTimedOut | JobFailed | JobCancelled):
                return inner
        return exc.exceptions[0] if exc.exceptions else exc
    return exc


def add_fragments_servicer(server: grpc.aio.Server, node: StorageNode) -> FragmentServicer:
    """Serve query fragments on ``server`` over ``node``'s records."""
    servicer = FragmentServicer(node)
    fragment_pb2_grpc.add_FragmentsServicer_to_server(servicer, server)
    return servicer
