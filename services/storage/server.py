"""The gRPC surface of a storage node: a thin servicer over StorageNode, the health service,
and the process lifecycle (serve until SIGTERM, then stop accepting, flush the writer, exit)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.runtime import announce_port, freeze_heap, freeze_heap_forever, log_config
from libs.storage_client import CHANNEL_OPTIONS
from services.storage.backends import open_backend
from services.storage.broadcasts import BroadcastDropped
from services.storage.change_feed import SubscriberDropped
from services.storage.cluster_member import StorageClusterMember
from services.storage.config import StorageConfig
from services.storage.fragments import add_fragments_servicer
from services.storage.merge import BadBatch
from services.storage.node import NotHeld, StorageNode, TableBehind
from services.storage.scan import BadScan
from topgun_rpc import common_pb2, storage_pb2, storage_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "topgun.rpc.Storage"
SHUTDOWN_GRACE_S = 2.0
FLUSH_TIMEOUT_S = 30.0


Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def multiplexed(
    requests: AsyncIterable[Req], handle: Callable[[Req], Awaitable[Resp]]
) -> AsyncIterator[Resp]:
    """Serve a request stream: every request is handled in its own task as it arrives (a write
    waiting for its concern holds up no other), and answers leave in the order they are ready.
    ``handle`` answers failures inside the response. Ends once the caller stopped sending and
    every request was answered."""
    ready: asyncio.Queue[asyncio.Future[Resp] | None] = asyncio.Queue()
    tasks: set[asyncio.Future[Resp]] = set()

    def finished(t: asyncio.Future[Resp]) -> None:
        tasks.discard(t)
        ready.put_nowait(t)

    async def read() -> None:
        try:
            async for req in requests:
                t = asyncio.ensure_future(handle(req))
                tasks.add(t)
                t.add_done_callback(finished)
        finally:
            ready.put_nowait(None)

    reader = asyncio.ensure_future(read())
    reading = True
    try:
        while reading or tasks or not ready.empty():
            item = await ready.get()
            if item is None:
                reading = False
                continue
            if not item.cancelled():
                yield item.result()
    finally:
        reader.cancel()
        for t in list(tasks):
            t.cancel()


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


async def _answered(
    handle: Callable[[Any], Awaitable[Any]], request: Any, empty: Callable[[], Any]
) -> Any:
    """``handle(request)`` as a stream answer: tagged with the request's id, and a failure of the
    request as a whole (the unary call's abort) carried in ``error_code`` and ``error``."""
    try:
        resp = await handle(request)
    except (BadBatch, TableBehind) as e:
        code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(e, BadBatch) else UNAVAILABLE
        resp = empty()
        resp.error_code, resp.error = code.value[0], str(e)
    except Exception as e:
        log.exception("a streamed request failed")
        resp = empty()
        resp.error_code, resp.error = grpc.StatusCode.INTERNAL.value[0], str(e)
    resp.request_id = request.request_id
    return resp


class StorageServicer(storage_pb2_grpc.StorageServicer):
    """Maps node errors to gRPC statuses; never lets one escape as an internal error."""

    def __init__(self, node: StorageNode) -> None:
        self.node = node

    async def Apply(self, request: Any, context: Any) -> storage_pb2.ApplyResponse:
        try:
            return await self.node.apply(request)
        except BadBatch as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise  # unreachable: abort raises

    async def ApplyStream(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[storage_pb2.ApplyResponse]:
        def apply(r: Any) -> Awaitable[storage_pb2.ApplyResponse]:
            return _answered(self.node.apply, r, storage_pb2.ApplyResponse)

        async for resp in multiplexed(request_iterator, apply):
            yield resp

    async def Replicate(self, request: Any, context: Any) -> storage_pb2.ReplicateResponse:
        try:
            return await self.node.replicate(request)
        except BadBatch as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            raise
        except TableBehind as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
            raise

    async def ReplicateStream(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[storage_pb2.ReplicateResponse]:
        def replicate(r: Any) -> Awaitable[storage_pb2.ReplicateResponse]:
            return _answered(self.node.replicate, r, storage_pb2.ReplicateResponse)

        async for resp in multiplexed(request_iterator, replicate):
            yield resp

    async def Get(self, request: Any, context: Any) -> common_pb2.RecordBatch:
        try:
            return self.node.get(request)
        except NotHeld as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise

    async def Scan(self, request: Any, context: Any) -> AsyncIterator[common_pb2.RecordBatch]:
        try:
            async for page in self.node.scan(request):
                yield page
        except NotHeld as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except BadScan as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    async def LeafSums(self, request: Any, context: Any) -> storage_pb2.LeafSumsResponse:
        try:
            return self.node.leaf_sums(request)
        except NotHeld as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise

    async def BucketRecords(self, request: Any, context: Any) -> common_pb2.RecordBatch:
        try:
            return self.node.bucket_records(request)
        except NotHeld as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise

    async def ChangeFeed(
        self, request: Any, context: Any
    ) -> AsyncIterator[storage_pb2.ChangeBatch]:
        try:
            async for batch in self.node.change_feed(request):
                yield batch
        except NotHeld as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except SubscriberDropped as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))

    async def PartitionInfo(self, request: Any, context: Any) -> storage_pb2.PartitionInfoResponse:
        return self.node.partition_info()

    async def Maps(self, request: Any, context: Any) -> storage_pb2.MapsResponse:
        return self.node.maps()

    async def Publish(self, request: Any, context: Any) -> storage_pb2.PublishResponse:
        self.node.publish(request)
        return storage_pb2.PublishResponse()

    async def Broadcasts(self, request: Any, context: Any) -> AsyncIterator[storage_pb2.Broadcast]:
        try:
            async for item in self.node.broadcasts.stream(request.subscriber or "?"):
                yield item
        except BroadcastDropped as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))

    async def CounterMerge(self, request: Any, context: Any) -> storage_pb2.CounterState:
        try:
            return self.node.counter_merge(request)
        except NotHeld as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise

    async def CounterGet(self, request: Any, context: Any) -> storage_pb2.CounterState:
        try:
            return self.node.counter_get(request)
        except NotHeld as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
            raise


async def serve(config: StorageConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run a storage node until ``stop`` is set or SIGTERM/SIGINT arrives."""
    log_config(log, config)
    backend = open_backend(
        config.storage,
        sqlite_path=config.sqlite_path,
        pg_schema=config.pg_schema,
        compact_after=config.compact_after,
    )
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise SystemExit(f"cannot listen on {config.host}:{config.port}")
    config = dataclasses.replace(config, port=port)
    await backend.open()
    node = StorageNode(config, backend)
    await node.load()
    freeze_heap()  # the loaded records are never garbage; keep the collector off them
    cluster = StorageClusterMember(node, config) if config.nats_url else None
    if cluster is not None:
        await cluster.start()  # registered, fenced until the cluster's table is adopted
    else:
        node.adopt_table(node.table)  # the static table: start its replicators
    storage_pb2_grpc.add_StorageServicer_to_server(StorageServicer(node), server)
    add_fragments_servicer(server, node)  # query DAG fragments over the node's records
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    async with asyncio.TaskGroup() as tg:
        writer_task = tg.create_task(node.writer.run(), name="group-commit")
        compaction = tg.create_task(node.compact_forever(), name="compaction")
        heap = tg.create_task(freeze_heap_forever(), name="heap")
        if cluster is not None:
            tg.create_task(cluster.run(stop), name="cluster")
        await server.start()
        if cluster is not None:  # ready means: the cluster's table names this node
            await cluster.wait_in_table()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "storage node %s serving on %s:%d (%d primaries, %d backups, store %s)",
            config.node_id,
            config.host,
            port,
            len(node.primaries),
            int(node.backup_mask.sum()),
            backend.name,
        )
        announce_port(port)
        await stop.wait()
        log.info("shutting down: no new calls, flushing the store")
        await health_servicer.enter_graceful_shutdown()
        await server.stop(SHUTDOWN_GRACE_S)
        compaction.cancel()
        heap.cancel()
        await node.replicas.close()
        node.writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(writer_task), FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.error("the store did not flush within %.0fs", FLUSH_TIMEOUT_S)
            writer_task.cancel()
    await backend.close()
    log.info("storage node %s stopped", config.node_id)
