"""One distributed job: fragments on the storage nodes, the final stage here.

The job's DAG is split into its storage part and its coordinator part. Every storage node that
owns partitions runs the storage part over them (``Fragments.RunFragment``); the batches each
fragment streams back go into the coordinator part's input ports, whose output is the result.

Retries: a fragment that fails because its node is gone (UNAVAILABLE) or no longer holds the
partitions (FAILED_PRECONDITION) is run again for the same partitions on the node the refreshed
partition table names — the owner, or a backup when the owner failed. To retry without handing
the final stage the same rows twice, a fragment's batches of a port are held until the fragment
says the port is done; past ``hold_rows`` they stream on, and a failure after anything went on
fails the job. A port closes once the fragments of all 271 partitions finished it.

Cancellation and deadlines: the job runs under one deadline; cancelling or timing out cancels the
fragment calls (which stops them on their nodes) and also asks every node it used to cancel the
job's fragments, in case a call was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import msgpack

from libs.crdt.hashing import PARTITION_COUNT
from libs.dag import RESULT_PORT, Batch, DagSpec, Job, JobFailed, JobTimedOut, decode_batch
from libs.dag.protocol import counters_to_pb, merge_counters, spec_to_pb
from libs.dag.registry import build_coordinator
from services.query_dag.topology import NoReplica, Topology
from topgun_rpc import fragment_pb2, query_dag_pb2

log = logging.getLogger(__name__)

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION}

Emit = Callable[[Batch], Awaitable[None]]


class FragmentFailed(JobFailed):
    """A fragment failed on its node and could not be retried."""


@dataclass(slots=True)
class FragmentRun:
    node: str
    partitions: list[int]
    attempt: int
    state: str = "running"
    rows_scanned: int = 0
    error: str = ""

    def to_pb(self) -> query_dag_pb2.FragmentStatus:
        return query_dag_pb2.FragmentStatus(
            node_id=self.node,
            partitions=self.partitions,
            state=self.state,
            attempt=self.attempt,
            rows_scanned=self.rows_scanned,
            error=self.error,
        )


class DistributedJob:
    def __init__(
        self,
        job_id: str,
        spec: DagSpec,
        topology: Topology,
        *,
        timeout_s: float,
        attempts: int = 3,
        hold_rows: int = 200_000,
        principal: Mapping[str, Any] | None = None,
        now_ms: int | None = None,
    ) -> None:
        self.job_id = job_id
        self.topology = topology
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.hold_rows = hold_rows
        self.principal = principal
        self.now_ms = now_ms or int(time.time() * 1000)
        fragment, coordinator, ports = spec.split()
        self.ports = ports
        self.has_fragments = bool(fragment.vertices)
        self.final = Job(build_coordinator(coordinator, ports, principal=principal), name=job_id)
        self._spec_pb = spec_to_pb(spec)
        self._principal_bytes = (
            msgpack.packb(dict(principal), use_bin_type=True) if principal else b""
        )
        self.runs: list[FragmentRun] = []
        self.storage_counters: dict[str, fragment_pb2.VertexCounters] = {}
        self.state = "pending"
        self.error = ""
        self._started = 0.0
        self._finished = 0.0
        self._deadline = 0.0
        self._failed_nodes: set[str] = set()
        self._contacted: set[str] = set()
        self._coverage: dict[str, int] = {}
        self._closed: set[str] = set()

    # --- running ------------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        """Run to completion, handing every result batch to ``emit`` (awaited: a slow caller
        slows the job down to the storage nodes). Raises JobTimedOut, JobFailed or
        CancelledError."""
        self.state = "running"
        self._started = time.monotonic()
        self._deadline = self._started + self.timeout_s
        completed = False
        try:
            async with asyncio.timeout(self.timeout_s), asyncio.TaskGroup() as tg:
                tg.create_task(self.final.run())
                tg.create_task(self._fragments())
                tg.create_task(self._drain(emit))
            completed = True
            self.state = "completed"
        except TimeoutError:
            self._fail(f"job {self.job_id} timed out after {self.timeout_s:g}s")
            raise JobTimedOut(self.error) from None
        except asyncio.CancelledError:
            self.state = "cancelled"
            self.error = f"job {self.job_id} was cancelled"
            raise
        except BaseExceptionGroup as eg:
            first = _first_error(eg)
            self._fail(str(first) if isinstance(first, JobFailed | NoReplica) else repr(first))
            if isinstance(first, NoReplica):
                raise FragmentFailed(self.error) from first
            raise JobFailed(self.error) from first
        finally:
            self._finished = time.monotonic()
            if not completed and self._contacted:
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self.topology.cancel_everywhere(self.job_id, sorted(self._contacted))
                    )

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        for r in self.runs:
            if r.state == "running":
                r.state = "cancelled"

    async def _drain(self, emit: Emit) -> None:
        async for batch in self.final.output(RESULT_PORT):
            await emit(batch)

    async def _fragments(self) -> None:
        if self.has_fragments:
            assignment = self.topology.assign(range(PARTITION_COUNT))
            async with asyncio.TaskGroup() as tg:
                for node, parts in assignment.items():
                    tg.create_task(self._fragment(tg, node, parts, 1))
        for p in self.ports:
            self._close(p.name)

    def _close(self, port: str) -> None:
        if port not in self._closed:
            self._closed.add(port)
            self.final.input(port).close()

    async def _commit(self, port: str, batches: list[Batch], partitions: int) -> None:
        """A fragment's batches of ``port`` go to the final stage; once every partition's
        fragment finished the port, the port closes (its consumer may then move on, e.g. a
        hash join from its build side to its probe side)."""
        for b in batches:
            await self.final.input(port).put(b)
        self._coverage[port] = self._coverage.get(port, 0) + partitions
        if self._coverage[port] >= PARTITION_COUNT:
            self._close(port)

    async def _fragment(
        self, tg: asyncio.TaskGroup, node: str, partitions: list[int], attempt: int
    ) -> None:
        run = FragmentRun(node, partitions, attempt)
        self.runs.append(run)
        held: dict[str, list[Batch]] = {p.name: [] for p in self.ports}
        finished: set[str] = set()
        held_rows = 0
        committed = False  # some of its batches reached the final stage: no retry any more
        remaining = max(0.001, self._deadline - time.monotonic())
        req = fragment_pb2.FragmentRequest(
            job_id=self.job_id,
            fragment_id=f"{node}#{attempt}",
            dag=self._spec_pb,
            partitions=partitions,
            timeout_ms=max(1, int(remaining * 1000)),
            table_version=self.topology.table.version,
            principal=self._principal_bytes,
            now_ms=self.now_ms,
            # a backup is read only where the owner failed (failover)
            allow_backups=any(self.topology.table.owners[p] != node for p in partitions),
        )
        self._contacted.add(node)
        try:
            call = self.topology.fragments(node).RunFragment(req, timeout=remaining)
            async for msg in call:
                if msg.done:
                    merge_counters(self.storage_counters, msg.vertices)
                    run.rows_scanned = msg.rows_scanned
                    continue
                if msg.port_done:
                    committed = True
                    finished.add(msg.port)
                    await self._commit(msg.port, held.pop(msg.port, []), len(partitions))
                    continue
                batch = decode_batch(msg.batch)
                if committed:
                    await self.final.input(msg.port).put(batch)
                    continue
                held[msg.port].append(batch)
                held_rows += len(batch)
                if held_rows > self.hold_rows:
                    committed = True
                    for port in [p.name for p in self.ports]:
                        for b in held.pop(port, []):
                            await self.final.input(port).put(b)
                        held[port] = []
            for p in self.ports:
                if p.name not in finished:
                    await self._commit(p.name, held.pop(p.name, []), len(partitions))
            run.state = "done"
        except grpc.aio.AioRpcError as e:
            code = e.code()
            run.error = f"{code.name}: {e.details()}"
            if code in _RETRYABLE and not committed and attempt < self.attempts:
                run.state = "retried"
                if code is grpc.StatusCode.UNAVAILABLE:
                    self._failed_nodes.add(node)
                log.warning(
                    "job %s: fragment on %s failed (%s); retrying %d partitions",
                    self.job_id,
                    node,
                    run.error,
                    len(partitions),
                )
                await self.topology.refresh(avoid=self._failed_nodes)
                for n2, p2 in self.topology.assign(
                    partitions, avoid=self._failed_nodes | {node}
                ).items():
                    tg.create_task(self._fragment(tg, n2, p2, attempt + 1))
                return
            run.state = "failed"
            raise FragmentFailed(
                f"fragment on storage node {node} (attempt {attempt}, {len(partitions)} "
                f"partitions) failed: {run.error}"
            ) from None

    # --- status -------------------------------------------------------------------------------

    def status(self) -> query_dag_pb2.JobStatus:
        end = self._finished or (time.monotonic() if self._started else 0.0)
        counters = dict(self.storage_counters)
        for c in counters_to_pb(self.final.status().vertices):
            counters[c.name] = c
        return query_dag_pb2.JobStatus(
            job_id=self.job_id,
            state=self.state,
            error=self.error,
            elapsed_ms=(end - self._started) * 1000.0 if self._started else 0.0,
            vertices=list(counters.values()),
            fragments=[r.to_pb() for r in self.runs],
            rows_scanned=sum(r.rows_scanned for r in self.runs),
        )


def _first_error(eg: BaseExceptionGroup[Any]) -> BaseException:
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            return _first_error(e)
        if isinstance(e, JobFailed | NoReplica):
            return e
    return eg.exceptions[0]
