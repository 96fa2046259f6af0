"""QueryDagClient: the query_dag coordinator's gRPC API as async Python calls.

``query`` answers a ``QUERY_SUB`` query (libs.query's ``QueryResult``); ``run_job`` and
``run_dag`` stream result batches; ``cancel``, ``status`` and ``explain`` do what they say. Every
call has a deadline; a stream's deadline is the job's timeout plus a margin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
import msgpack

from libs.dag.batch import Batch
from libs.dag.codec import decode_batch
from libs.dag.protocol import spec_to_pb
from libs.dag.spec import DagSpec
from libs.query.evaluate import QueryResult
from topgun_rpc import query_dag_pb2, query_dag_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
_MARGIN_S = 5.0


class QueryDagError(RuntimeError):
    """A job the coordinator refused or that failed; ``code`` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.details = message


def _translate(e: grpc.aio.AioRpcError) -> QueryDagError:
    return QueryDagError(e.code(), e.details() or "")


def _pack(value: Mapping[str, Any] | None) -> bytes:
    return msgpack.packb(dict(value), use_bin_type=True) if value else b""


class QueryDagClient:
    def __init__(self, address: str, *, timeout: float = 60.0) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
        self._stub = query_dag_pb2_grpc.QueryDagStub(self._channel)
        self.last_status: query_dag_pb2.JobStatus | None = None

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> QueryDagClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _request(
        self,
        map_name: str,
        *,
        job_id: str = "",
        timeout: float | None = None,
        principal: Mapping[str, Any] | None = None,
    ) -> tuple[query_dag_pb2.SubmitRequest, float]:
        t = self.timeout if timeout is None else timeout
        req = query_dag_pb2.SubmitRequest(
            job_id=job_id,
            map_name=map_name,
            timeout_ms=max(1, int(t * 1000)),
            principal=_pack(principal),
        )
        return req, t + _MARGIN_S

    async def _stream(
        self, req: query_dag_pb2.SubmitRequest, deadline: float
    ) -> AsyncIterator[query_dag_pb2.SubmitResponse]:
        try:
            async for msg in self._stub.Submit(req, timeout=deadline):
                if msg.done:
                    self.last_status = msg.status
                yield msg
        except grpc.aio.AioRpcError as e:
            raise _translate(e) from None

    async def query(
        self,
        map_name: str,
        query: Mapping[str, Any] | None,
        fields: Sequence[str] | None = None,
        *,
        principal: Mapping[str, Any] | None = None,
        now_ms: int = 0,
        max_results: int = 0,
        timeout: float | None = None,
        job_id: str = "",
    ) -> QueryResult:
        """The answer to a QUERY_SUB query, as ``libs.query.evaluate`` would give it."""
        req, deadline = self._request(map_name, job_id=job_id, timeout=timeout, principal=principal)
        req.query = msgpack.packb(dict(query or {}), use_bin_type=True)
        if fields is not None:
            req.fields.extend(fields)
            req.has_fields = True
        req.now_ms = now_ms
        req.max_results = max_results
        rows: list[tuple[str, Any]] = []
        last: query_dag_pb2.SubmitResponse | None = None
        async for msg in self._stream(req, deadline):
            if msg.rows:
                rows.extend((k, v) for k, v in msgpack.unpackb(msg.rows, raw=False))
            if msg.done:
                last = msg
        if last is None:
            raise QueryDagError(grpc.StatusCode.UNKNOWN, "the stream ended without a result")
        return QueryResult(
            rows,
            last.has_more,
            last.next_cursor or None,
            last.cursor_status or "none",  # type: ignore[arg-type]
        )

    async def run_job(
        self,
        map_name: str,
        job: Mapping[str, Any],
        *,
        job_id: str = "",
        principal: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Batch]:
        """Result batches of an analytics job (a query map; aggregations may go without
        groupBy and may use count_distinct)."""
        req, deadline = self._request(map_name, job_id=job_id, timeout=timeout, principal=principal)
        req.job = msgpack.packb(dict(job), use_bin_type=True)
        async for msg in self._stream(req, deadline):
            if msg.batch:
                yield decode_batch(msg.batch)

    async def run_dag(
        self,
        dag: DagSpec,
        *,
        job_id: str = "",
        principal: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Batch]:
        req, deadline = self._request("", job_id=job_id, timeout=timeout, principal=principal)
        req.dag.CopyFrom(spec_to_pb(dag))
        async for msg in self._stream(req, deadline):
            if msg.batch:
                yield decode_batch(msg.batch)

    async def cancel(self, job_id: str, *, timeout: float = 5.0) -> bool:
        try:
            resp = await self._stub.Cancel(
                query_dag_pb2.CancelJobRequest(job_id=job_id), timeout=timeout
            )
        except grpc.aio.AioRpcError as e:
            raise _translate(e) from None
        return bool(resp.found)

    async def status(self, job_id: str, *, timeout: float = 5.0) -> query_dag_pb2.JobStatus:
        try:
            return await self._stub.Status(
                query_dag_pb2.JobStatusRequest(job_id=job_id), timeout=timeout
            )
        except grpc.aio.AioRpcError as e:
            raise _translate(e) from None

    async def explain(
        self,
        map_name: str,
        *,
        query: Mapping[str, Any] | None = None,
        job: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> str:
        req = query_dag_pb2.SubmitRequest(map_name=map_name)
        if job is not None:
            req.job = msgpack.packb(dict(job), use_bin_type=True)
        else:
            req.query = msgpack.packb(dict(query or {}), use_bin_type=True)
        try:
            resp = await self._stub.Explain(req, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise _translate(e) from None
        return str(resp.text)
