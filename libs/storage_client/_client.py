"""StorageClient: one storage node's gRPC API as async Python calls, each with a deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import msgpack
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.cluster.partition_table import PartitionTable
from libs.crdt.hashing import PARTITION_COUNT
from libs.rpc import RequestStream
from libs.storage_client._builder import OpBatchBuilder
from libs.storage_client._errors import request_stream, translate
from libs.storage_client._records import (
    ChangePage,
    StoredRecord,
    changes_from_batch,
    records_from_batch,
)
from topgun_rpc import common_pb2, storage_pb2, storage_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

LEAF_COUNT = 4096


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Per-op statuses (``OpStatus`` values, batch order), messages of failed ops by index, and
    the write concern every applied op reached."""

    statuses: list[int]
    errors: dict[int, str]
    achieved: int
    table_version: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True, slots=True)
class LeafSums:
    """A map's additive Merkle leaf sums: 4,096 uint32, one per depth-3 leaf."""

    sums: npt.NDArray[np.uint32]
    kind: int
    record_count: int


@dataclass(frozen=True, slots=True)
class MapSummary:
    name: str
    kind: int
    record_count: int


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    node_id: str
    table: PartitionTable


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    name: str
    positive: dict[str, float]
    negative: dict[str, float]

    @property
    def value(self) -> float:
        return sum(self.positive.values()) - sum(self.negative.values())


def leaf_sums_from_bytes(data: bytes) -> npt.NDArray[np.uint32]:
    if not data:
        return np.zeros(LEAF_COUNT, dtype=np.uint32)
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)


def add_leaf_sums(arrays: Iterable[npt.NDArray[np.uint32]]) -> npt.NDArray[np.uint32]:
    """The wrapping uint32 sum of leaf-sum arrays (owners' shares of one map add up)."""
    total = np.zeros(LEAF_COUNT, dtype=np.uint32)
    for a in arrays:
        total += a  # uint32 arithmetic wraps
    return total


class StorageClient:
    """Async client of one storage node. Every call has a deadline (``timeout`` seconds, default
    the client's); streams that are meant to live long (change feed, broadcasts) have none and
    end when the caller stops iterating. ``apply`` rides one long-lived ApplyStream (see
    ``libs.rpc.RequestStream``); ``streamed=False`` makes it a unary Apply call each time."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float = 5.0,
        channel: grpc.aio.Channel | None = None,
        streamed: bool = True,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._channel = channel or grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = storage_pb2_grpc.StorageStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._applies: RequestStream[storage_pb2.ApplyRequest, storage_pb2.ApplyResponse] | None = (
            request_stream(self._stub.ApplyStream, address) if streamed else None
        )

    @property
    def stub(self) -> storage_pb2_grpc.StorageStub:
        """The raw stub, for callers that want the protobuf messages themselves."""
        return self._stub

    async def close(self) -> None:
        if self._applies is not None:
            await self._applies.close()
        await self._channel.close(None)

    async def __aenter__(self) -> StorageClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _t(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    # --- writes -------------------------------------------------------------------------------

    async def apply(
        self,
        ops: common_pb2.OpBatch | OpBatchBuilder,
        write_concern: int = common_pb2.APPLIED,
        *,
        timeout: float | None = None,
        table_version: int = 0,
    ) -> ApplyResult:
        """Merge a batch on the node; returns once ``write_concern`` is met or the node's wait for
        it ran out (``achieved`` then says how far it got). ``timeout`` bounds the whole call."""
        batch = ops.build() if isinstance(ops, OpBatchBuilder) else ops
        t = self._t(timeout)
        req = storage_pb2.ApplyRequest(
            ops=batch,
            write_concern=write_concern,  # type: ignore[arg-type]
            timeout_ms=max(1, int(t * 1000 * 0.8)),
            table_version=table_version,
        )
        if self._applies is not None:
            resp = await self._applies.request(req, t)
        else:
            try:
                resp = await self._stub.Apply(req, timeout=t)
            except grpc.aio.AioRpcError as e:
                raise translate(e, self.address) from None
        errors = dict(zip(resp.error_index, resp.error_message, strict=False))
        return ApplyResult(list(resp.status), errors, resp.achieved, resp.table_version)

    # --- reads --------------------------------------------------------------------------------

    async def get_batch(
        self, map_name: str, keys: Sequence[str], *, timeout: float | None = None
    ) -> common_pb2.RecordBatch:
        try:
            return await self._stub.Get(
                storage_pb2.GetRequest(map_name=map_name, keys=list(keys)),
                timeout=self._t(timeout),
            )
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None

    async def get(
        self, map_name: str, keys: Sequence[str], *, timeout: float | None = None
    ) -> list[StoredRecord]:
        """Current records of ``keys`` (tombstones included; unknown keys are absent)."""
        return records_from_batch(await self.get_batch(map_name, keys, timeout=timeout))

    async def scan_pages(
        self,
        map_name: str,
        *,
        predicate: Mapping[str, Any] | None = None,
        where: Mapping[str, Any] | None = None,
        fields: Sequence[str] = (),
        limit: int = 0,
        partitions: Sequence[int] = (),
        include_tombstones: bool = False,
        page_size: int = 0,
        timeout: float | None = 30.0,
    ) -> AsyncIterator[common_pb2.RecordBatch]:
        """The raw pages of a Scan. ``predicate`` is a PredicateNode tree, ``where`` a map of
        equalities (PROTOCOL.md 6.2); ``timeout`` bounds the whole scan."""
        if predicate is not None and where is not None:
            raise ValueError("give either predicate or where, not both")
        raw = b""
        if predicate is not None:
            raw = msgpack.packb(dict(predicate), use_bin_type=True)
        elif where is not None:
            raw = msgpack.packb(dict(where), use_bin_type=True)
        req = storage_pb2.ScanRequest(
            map_name=map_name,
            predicate=raw,
            fields=list(fields),
            limit=limit,
            partitions=list(partitions),
            include_tombstones=include_tombstones,
            page_size=page_size,
            predicate_is_where=where is not None,
        )
        call = self._stub.Scan(req, timeout=timeout)
        try:
            async for page in call:
                yield page
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        finally:
            call.cancel()

    async def scan(self, map_name: str, **kw: Any) -> AsyncIterator[list[StoredRecord]]:
        """Pages of a Scan as rows; keywords as for ``scan_pages``."""
        async for page in self.scan_pages(map_name, **kw):
            yield records_from_batch(page)

    async def scan_all(self, map_name: str, **kw: Any) -> list[StoredRecord]:
        """Every row of a Scan in one list."""
        out: list[StoredRecord] = []
        async for page in self.scan_pages(map_name, **kw):
            out.extend(records_from_batch(page))
        return out

    async def leaf_sums(
        self, map_name: str, partitions: Sequence[int] = (), *, timeout: float | None = None
    ) -> LeafSums:
        """The node's share of a map's Merkle leaf sums over ``partitions`` (empty = the node's
        primaries)."""
        try:
            resp = await self._stub.LeafSums(
                storage_pb2.LeafSumsRequest(map_name=map_name, partitions=list(partitions)),
                timeout=self._t(timeout),
            )
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        return LeafSums(leaf_sums_from_bytes(resp.sums), resp.kind, resp.record_count)

    async def bucket_records_batch(
        self,
        map_name: str,
        paths: Sequence[str],
        partitions: Sequence[int] = (),
        *,
        timeout: float | None = None,
    ) -> common_pb2.RecordBatch:
        if not paths:
            return common_pb2.RecordBatch()
        req = storage_pb2.BucketRecordsRequest(
            map_name=map_name, path=paths[0], paths=list(paths[1:]), partitions=list(partitions)
        )
        try:
            return await self._stub.BucketRecords(req, timeout=self._t(timeout))
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None

    async def bucket_records(
        self,
        map_name: str,
        paths: Sequence[str],
        partitions: Sequence[int] = (),
        *,
        timeout: float | None = None,
    ) -> list[StoredRecord]:
        """Every record (tombstones included) whose key hash starts with one of ``paths``."""
        batch = await self.bucket_records_batch(map_name, paths, partitions, timeout=timeout)
        return records_from_batch(batch)

    async def maps(self, *, timeout: float | None = None) -> list[MapSummary]:
        try:
            resp = await self._stub.Maps(storage_pb2.MapsRequest(), timeout=self._t(timeout))
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        return [MapSummary(m.name, m.kind, m.record_count) for m in resp.maps]

    # --- change feed --------------------------------------------------------------------------

    async def change_feed_batches(
        self,
        map_names: Sequence[str] = (),
        from_seq: Mapping[int, int] | None = None,
        *,
        partitions: Sequence[int] = (),
        subscriber: str = "",
        live_only: bool = False,
        linger_ms: int = 0,
    ) -> AsyncIterator[storage_pb2.ChangeBatch]:
        """The raw ChangeBatch stream; see ``change_feed``."""
        req = storage_pb2.ChangeFeedRequest(
            map_names=list(map_names),
            from_seq=dict(from_seq or {}),
            subscriber=subscriber,
            partitions=list(partitions),
            live_only=live_only,
            linger_ms=linger_ms,
        )
        call = self._stub.ChangeFeed(req)
        try:
            async for batch in call:
                yield batch
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        finally:
            call.cancel()

    async def change_feed(
        self,
        map_names: Sequence[str] = (),
        from_seq: Mapping[int, int] | None = None,
        *,
        partitions: Sequence[int] = (),
        subscriber: str = "",
        live_only: bool = False,
        linger_ms: int = 0,
    ) -> AsyncIterator[ChangePage]:
        """Changes of ``map_names`` (empty = all) on ``partitions`` (empty = the node's
        primaries): first the store's records changed after ``from_seq[p]``, then a page with
        ``caught_up``, then live changes. Keep the last seq per partition to resume after a
        reconnect. ``linger_ms`` lets the node wait that long after a change to send more with
        it (fewer, larger pages for a consumer that can take the delay). Raises FeedDropped if
        the node dropped a subscriber that fell behind."""
        async for batch in self.change_feed_batches(
            map_names,
            from_seq,
            partitions=partitions,
            subscriber=subscriber,
            live_only=live_only,
            linger_ms=linger_ms,
        ):
            yield changes_from_batch(batch)

    # --- cluster ------------------------------------------------------------------------------

    async def partition_info(self, *, timeout: float | None = None) -> PartitionInfo:
        try:
            resp = await self._stub.PartitionInfo(
                storage_pb2.PartitionInfoRequest(), timeout=self._t(timeout)
            )
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        owners = [""] * PARTITION_COUNT
        backups: list[tuple[str, ...]] = [()] * PARTITION_COUNT
        for a in resp.partitions:
            owners[a.partition] = a.owner
            backups[a.partition] = tuple(a.backups)
        table = PartitionTable(
            resp.table_version,
            tuple(owners),
            tuple(backups),
            {n.node_id: n.address for n in resp.nodes},
        )
        return PartitionInfo(resp.node_id, table)

    async def check_health(self, *, timeout: float | None = None) -> bool:
        """True when the node reports SERVING on the standard gRPC health service."""
        try:
            resp = await self._health.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=self._t(timeout)
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    # --- topics and counters ------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        publisher_id: str = "",
        origin: str = "",
        timestamp_ms: int = 0,
        timeout: float | None = None,
    ) -> None:
        msg = storage_pb2.Broadcast(
            topic=storage_pb2.TopicMessage(
                topic=topic,
                data=data,
                publisher_id=publisher_id,
                origin=origin,
                timestamp_ms=timestamp_ms,
            )
        )
        try:
            await self._stub.Publish(msg, timeout=self._t(timeout))
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None

    async def broadcasts(self, subscriber: str = "") -> AsyncIterator[storage_pb2.Broadcast]:
        """Every topic message and counter update the node fans out, until the caller stops."""
        call = self._stub.Broadcasts(storage_pb2.BroadcastFeedRequest(subscriber=subscriber))
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        finally:
            call.cancel()

    async def counter_merge(
        self,
        name: str,
        positive: Mapping[str, float],
        negative: Mapping[str, float],
        *,
        origin: str = "",
        timeout: float | None = None,
    ) -> CounterSnapshot:
        """Merge a PN counter state into the owner's (per-node max); returns the merged state."""
        req = storage_pb2.CounterState(
            name=name, positive=dict(positive), negative=dict(negative), origin=origin
        )
        try:
            resp = await self._stub.CounterMerge(req, timeout=self._t(timeout))
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        return CounterSnapshot(resp.name, dict(resp.positive), dict(resp.negative))

    async def counter_get(self, name: str, *, timeout: float | None = None) -> CounterSnapshot:
        try:
            resp = await self._stub.CounterGet(
                storage_pb2.CounterGetRequest(name=name), timeout=self._t(timeout)
            )
        except grpc.aio.AioRpcError as e:
            raise translate(e, self.address) from None
        return CounterSnapshot(resp.name, dict(resp.positive), dict(resp.negative))
