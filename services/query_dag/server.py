"""The gRPC surface of the coordinator (thin): decode a request, plan it, run it as a
:class:`~services.query_dag.coordinator.DistributedJob`, stream the result; and the process
lifecycle (serve until SIGTERM, cancel running jobs, exit)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import msgpack
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.dag import (
    Batch,
    DagError,
    DagSpec,
    JobFailed,
    JobQuery,
    JobTimedOut,
    QueryPlan,
    explain,
    plan_job,
    plan_query,
    query_result,
)
from libs.dag.codec import encode_batch_parts
from libs.dag.protocol import spec_from_pb, spec_to_pb
from libs.query import QueryError
from libs.query.model import parse_query
from libs.runtime import announce_port, log_config
from libs.storage_client import CHANNEL_OPTIONS
from services.query_dag.config import QueryDagConfig
from services.query_dag.coordinator import DistributedJob
from services.query_dag.jobs import DuplicateJob, JobRegistry
from services.query_dag.topology import NoReplica, Topology
from topgun_rpc import query_dag_pb2, query_dag_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "topgun.rpc.QueryDag"
SHUTDOWN_GRACE_S = 2.0
ROWS_PER_MESSAGE = 1000
_RESULT_QUEUE = 4


def _unpack_map(data: bytes, what: str) -> Any:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise QueryError(f"{what}: not valid msgpack: {exc}") from None
    if not isinstance(value, dict):
        raise QueryError(f"{what}: must be a msgpack map")
    return value


class QueryDagServicer(query_dag_pb2_grpc.QueryDagServicer):
    def __init__(self, config: QueryDagConfig, topology: Topology) -> None:
        self.config = config
        self.topology = topology
        self.jobs = JobRegistry(config.status_history)

    def _plan(
        self, request: query_dag_pb2.SubmitRequest
    ) -> tuple[DagSpec, QueryPlan | None, Any, int]:
        """The DAG of a request, its query plan (queries only), the principal and the clock."""
        now_ms = request.now_ms or int(time.time() * 1000)
        principal = _unpack_map(request.principal, "principal") if request.principal else None
        work = request.WhichOneof("work")
        if work == "query":
            fields = list(request.fields) if request.has_fields else None
            q = parse_query(_unpack_map(request.query, "query"), fields, principal=principal)
            plan = plan_query(
                request.map_name,
                q,
                now_ms=now_ms,
                max_results=request.max_results or 10_000,
            )
            return plan.spec, plan, principal, now_ms
        if work == "job":
            job_plan = plan_job(
                request.map_name, JobQuery.from_dict(_unpack_map(request.job, "job"))
            )
            return job_plan.spec, None, principal, now_ms
        if work == "dag":
            return spec_from_pb(request.dag), None, principal, now_ms
        raise QueryError("SubmitRequest needs one of query, job or dag")

    async def Submit(
        self, request: query_dag_pb2.SubmitRequest, context: Any
    ) -> AsyncIterator[query_dag_pb2.SubmitResponse]:
        try:
            spec, plan, principal, now_ms = self._plan(request)
            job_id = request.job_id or uuid.uuid4().hex
            timeout = (request.timeout_ms or self.config.job_timeout_ms) / 1000.0
            job = DistributedJob(
                job_id,
                spec,
                self.topology,
                timeout_s=timeout,
                attempts=self.config.fragment_attempts,
                hold_rows=self.config.hold_rows,
                principal=principal,
                now_ms=now_ms,
            )
        except (QueryError, DagError, ValueError, KeyError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises
        out: asyncio.Queue[Batch] = asyncio.Queue(_RESULT_QUEUE)
        task = asyncio.create_task(job.run(out.put), name=f"job {job_id}")
        try:
            self.jobs.add(job, task)
        except DuplicateJob as exc:
            task.cancel()
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        try:
            batches: list[Batch] = []
            async for batch in _until_done(out, task):
                if plan is not None:
                    batches.append(batch)
                else:
                    for data in encode_batch_parts(batch):
                        yield query_dag_pb2.SubmitResponse(job_id=job_id, batch=data)
            await self._raise_status(task, context)
            last = query_dag_pb2.SubmitResponse(job_id=job_id, done=True)
            if plan is not None:
                result = query_result(plan, batches, now_ms=now_ms)
                rows = [[k, v] for k, v in result.results]
                for i in range(0, len(rows), ROWS_PER_MESSAGE):
                    chunk = msgpack.packb(rows[i : i + ROWS_PER_MESSAGE], use_bin_type=True)
                    yield query_dag_pb2.SubmitResponse(job_id=job_id, rows=chunk)
                last.has_more = result.has_more
                last.next_cursor = result.next_cursor or ""
                last.cursor_status = result.cursor_status
            last.status.CopyFrom(job.status())
            yield last
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _raise_status(self, task: asyncio.Task[None], context: Any) -> None:
        if task.cancelled():
            await context.abort(grpc.StatusCode.CANCELLED, "the job was cancelled")
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, JobTimedOut):
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        if isinstance(exc, NoReplica):
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if isinstance(exc, JobFailed):
            code = (
                grpc.StatusCode.UNAVAILABLE
                if isinstance(exc.__cause__, NoReplica)
                else grpc.StatusCode.ABORTED
            )
            await context.abort(code, str(exc))
        log.error("job failed unexpectedly", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, f"the job failed: {exc!r}")

    async def Cancel(
        self, request: query_dag_pb2.CancelJobRequest, context: Any
    ) -> query_dag_pb2.CancelJobResponse:
        return query_dag_pb2.CancelJobResponse(found=self.jobs.cancel(request.job_id))

    async def Status(
        self, request: query_dag_pb2.JobStatusRequest, context: Any
    ) -> query_dag_pb2.JobStatus:
        job = self.jobs.get(request.job_id)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.job_id!r}")
            raise AssertionError  # unreachable: abort raises
        return job.status()

    async def Explain(
        self, request: query_dag_pb2.SubmitRequest, context: Any
    ) -> query_dag_pb2.ExplainResponse:
        try:
            spec, plan, _, _ = self._plan(request)
            spec.split()
        except (QueryError, DagError, ValueError, KeyError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        return query_dag_pb2.ExplainResponse(
            text=explain(plan if plan is not None else spec), dag=spec_to_pb(spec)
        )


async def _until_done(out: asyncio.Queue[Batch], task: asyncio.Task[None]) -> AsyncIterator[Batch]:
    """Batches from ``out`` until ``task`` (their producer) is done and ``out`` is empty."""
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


async def _follow_table(topology: Topology, interval: float) -> None:
    """Adopt the storage nodes' partition table now and then (it moves when the cluster
    rebalances), so fragments go to the current owners on the first try."""
    while True:
        try:
            await topology.refresh(newer_only=True)
        except Exception as exc:  # a refresh is best effort; the next one may work
            log.debug("partition table refresh failed: %s", exc)
        await asyncio.sleep(interval)


async def serve(config: QueryDagConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run the coordinator until ``stop`` is set or SIGTERM/SIGINT arrives."""
    log_config(log, config)
    topology = Topology.static(
        config.storage_nodes, config.backup_count, rpc_timeout=config.rpc_timeout_ms / 1000.0
    )
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise SystemExit(f"cannot listen on {config.host}:{config.port}")
    servicer = QueryDagServicer(config, topology)
    query_dag_pb2_grpc.add_QueryDagServicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    refresher = asyncio.create_task(
        _follow_table(topology, config.table_refresh_ms / 1000.0), name="partition-table"
    )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "query_dag serving on %s:%d over %d storage nodes",
        config.host,
        port,
        len(config.storage_nodes),
    )
    announce_port(port)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: cancelling %d running jobs", servicer.jobs.running)
        refresher.cancel()
        await health_servicer.enter_graceful_shutdown()
        servicer.jobs.cancel_all()
        await server.stop(SHUTDOWN_GRACE_S)
        await topology.close()
    log.info("query_dag stopped")
