"""StorageNode: the partitions this node holds and everything that acts on them — merge, group
commit, replication, change feed, broadcasts, counters — behind methods the gRPC surface calls.

Apply: validate and merge the batch (synchronously, no await in between), queue the changes for
the writer and the backups, offer them to the change feed, then wait for the write concern:
APPLIED (and below) answers at once; REPLICATED waits for the backups of the batch's partitions;
PERSISTED waits for the backups and for the group commit. The wait covers everything queued
before it, so an idempotent re-send of an op still in flight is acknowledged only once that op
itself reached the level asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence

import numpy as np
import numpy.typing as npt

from libs.cluster.partition_table import PartitionTable
from libs.crdt.hashing import PARTITION_COUNT, partition_of, partitions_of
from services.storage.backends import (
    Backend,
    Compacting,
    CountersChunk,
    LogChunk,
    LwwChunk,
    MapsChunk,
    OrChunk,
    SnapshotChunk,
)
from services.storage.broadcasts import BroadcastHub
from services.storage.change_feed import ChangeFanout, FeedFilter, stream_changes
from services.storage.config import StorageConfig
from services.storage.counters import CounterStore
from services.storage.merge import merge_batch
from services.storage.pages import RecordPageBuilder, lww_partition_page
from services.storage.partition_store import PartitionStore
from services.storage.replica_set import ReplicaSet
from services.storage.replication import Replicator
from services.storage.scan import scan_pages
from services.storage.writer import GroupCommitWriter
from topgun_rpc import common_pb2, storage_pb2

log = logging.getLogger(__name__)

APPLIED = int(common_pb2.APPLIED)
REPLICATED = int(common_pb2.REPLICATED)
PERSISTED = int(common_pb2.PERSISTED)
OP_APPLIED = int(storage_pb2.OP_APPLIED)
OP_NOT_OWNER = int(storage_pb2.OP_NOT_OWNER)
OR_ADD = int(common_pb2.OR_ADD)
MAP_KIND_OR = int(storage_pb2.MAP_KIND_OR)
ALL_PARTITIONS = np.ones(PARTITION_COUNT, dtype=bool)


class NotHeld(Exception):
    """The request names partitions (or a counter) this node does not hold."""


class TableBehind(Exception):
    """A peer spoke from a newer partition table than this node has learned within the wait."""


TABLE_WAIT_S = 2.0
NO_PARTITIONS = np.zeros(PARTITION_COUNT, dtype=bool)


class StorageNode:
    def __init__(self, config: StorageConfig, backend: Backend) -> None:
        self.config = config
        self.node_id = config.node_id
        self.backend = backend
        self.store = PartitionStore()
        self.counters = CounterStore()
        self.writer = GroupCommitWriter(backend, linger_s=config.commit_linger_ms / 1000.0)
        self.fanout = ChangeFanout(queue_size=config.feed_queue_batches)
        self.broadcasts = BroadcastHub()
        self.replicas = ReplicaSet(self.node_id, self.store, counters=self._counter_states)
        # Cluster mode (set by cluster_member.py): the incarnation this process is, whether it
        # may trust its table (fencing), and how to wait for a newer table.
        self.epoch = 0
        self.fenced: Callable[[], bool] = lambda: False
        self.wait_table: Callable[[int, float], Awaitable[bool]] | None = None
        addresses = dict(config.peers) or {config.node_id: config.address}
        self.table = PartitionTable.static(
            config.node_ids, backup_count=config.backup_count, addresses=addresses
        )
        self._set_masks(self.table)

    def _set_masks(self, table: PartitionTable) -> None:
        me = self.node_id
        ours = not table.epochs or table.epochs.get(me) == self.epoch
        if ours:
            self.primary_mask = np.array([o == me for o in table.owners], dtype=bool)
            self.backup_mask = np.array([me in b for b in table.backups], dtype=bool)
        else:  # the table names another incarnation of this node (or not this node at all)
            self.primary_mask = NO_PARTITIONS.copy()
            self.backup_mask = NO_PARTITIONS.copy()
        self.held_mask = self.primary_mask | self.backup_mask
        self.primaries: list[int] = np.flatnonzero(self.primary_mask).tolist()

    def adopt_table(self, table: PartitionTable) -> None:
        """Serve ``table`` from now on: ownership masks, and replicators for its backups."""
        before = int(self.primary_mask.sum()), int(self.backup_mask.sum())
        self.table = table
        self._set_masks(table)
        self.replicas.reconcile(table, serving=bool(self.primaries))
        log.info(
            "partition table version %d: %d primaries, %d backups (was %d/%d)",
            table.version,
            len(self.primaries),
            int(self.backup_mask.sum()),
            *before,
        )

    @property
    def replicators(self) -> list[Replicator]:
        return self.replicas.replicators

    def _writable(self) -> npt.NDArray[np.bool_]:
        return NO_PARTITIONS if self.fenced() else self.primary_mask

    async def _catch_up_table(self, version: int) -> bool:
        """Wait (briefly) for a table a peer already speaks from; True when we have it."""
        if version <= self.table.version:
            return True
        if self.wait_table is None:
            return False
        return await self.wait_table(version, TABLE_WAIT_S)

    # --- start-up -----------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the in-memory state (records, leaf sums, seqs, counters) from the backend."""
        t0 = time.perf_counter()
        n = 0
        kinds: dict[str, int] = {}
        async for chunk in self.backend.load():
            if isinstance(chunk, MapsChunk):
                for name, kind in chunk.rows:
                    kinds[name] = kind
                    self.store.create_map(name, kind)
            elif isinstance(chunk, LwwChunk):
                self.store.load_lww(
                    chunk.map_name,
                    chunk.keys,
                    chunk.partitions,
                    chunk.millis,
                    chunk.counters,
                    chunk.node_ids,
                    chunk.values,
                    chunk.ttl_ms,
                    chunk.seqs,
                )
                n += len(chunk.keys)
            elif isinstance(chunk, OrChunk):
                self.store.load_or(chunk.map_name, chunk.records, chunk.tombstones)
                n += len(chunk.records) + len(chunk.tombstones)
            elif isinstance(chunk, SnapshotChunk):
                n += self._load_snapshot(chunk)
            elif isinstance(chunk, LogChunk):
                n += self._replay(chunk)
            elif isinstance(chunk, CountersChunk):
                for name, data in chunk.rows:
                    self.counters.load(name, data)
        log.info(
            "loaded %d rows of %d maps and %d counters from %s in %.2fs",
            n,
            len(self.store.maps),
            len(self.counters),
            self.backend.name,
            time.perf_counter() - t0,
        )

    def _load_snapshot(self, chunk: SnapshotChunk) -> int:
        rows = common_pb2.RecordBatch.FromString(chunk.data)
        n = len(rows.keys)
        p = chunk.partition
        if chunk.kind == MAP_KIND_OR:
            recs = []
            tombs = []
            for k, kd, ms, c, nid, v, t, ttl, sq in zip(
                rows.keys,
                rows.kinds,
                rows.millis,
                rows.counters,
                rows.node_ids,
                rows.values,
                rows.tags,
                rows.ttl_ms,
                rows.seqs,
                strict=True,
            ):
                if kd == OR_ADD:
                    recs.append((k, p, t, v, ms, c, nid, ttl, sq))
                else:
                    tombs.append((k, p, t, ms, c, nid, sq))
            self.store.load_or(chunk.map_name, recs, tombs)
        else:
            self.store.load_lww(
                chunk.map_name,
                list(rows.keys),
                [p] * n,
                list(rows.millis),
                list(rows.counters),
                list(rows.node_ids),
                list(rows.values),
                list(rows.ttl_ms),
                list(rows.seqs),
            )
        return n

    def _replay(self, chunk: LogChunk) -> int:
        batch = storage_pb2.ChangeBatch.FromString(chunk.data)
        merge_batch(
            self.store,
            batch.ops,
            ALL_PARTITIONS,
            max_value_bytes=1 << 62,
            given_seqs=list(batch.seqs),
            primary=False,
        )
        return len(batch.seqs)

    async def compact_forever(self) -> None:
        """Fold the backend's change log into partition snapshots whenever it is due."""
        if not isinstance(self.backend, Compacting):
            return
        while True:
            await self.writer.committed.wait()
            self.writer.committed.clear()
            if self.backend.compaction_due():
                await self.compact()

    async def compact(self) -> int:
        """One compaction: snapshot every (map, partition) changed since the last one and let the
        backend drop the log they cover. Returns the number of snapshots written."""
        backend = self.backend
        if not isinstance(backend, Compacting):
            return 0
        upto, dirty = backend.begin_compaction()
        t0 = time.perf_counter()
        try:
            snaps = []
            for i, (name, p) in enumerate(sorted(dirty)):
                m = self.store.maps.get(name)
                if m is None:
                    continue
                if m.kind == MAP_KIND_OR:
                    page = RecordPageBuilder(name)
                    for row in self.store.iter_records(name, (p,), include_tombstones=True):
                        page.add(*row)
                    snaps.append((name, p, m.kind, len(page), page.build().SerializeToString()))
                else:
                    rows = m.parts[p] or {}
                    snaps.append((name, p, m.kind, len(rows), lww_partition_page(name, p, rows)))
                if i % 8 == 7:
                    await asyncio.sleep(0)  # let Apply calls in between
            await backend.compact(snaps, upto)
        except Exception:
            backend.abort_compaction(dirty)
            log.exception("compaction failed; the log is kept and retried later")
            return 0
        log.info(
            "compacted the log into %d partition snapshots in %.2fs",
            len(snaps),
            time.perf_counter() - t0,
        )
        return len(snaps)

    # --- writes -------------------------------------------------------------------------------

    async def apply(self, req: storage_pb2.ApplyRequest) -> storage_pb2.ApplyResponse:
        if req.table_version > self.table.version:
            await self._catch_up_table(req.table_version)
        await self.writer.reserve()
        out = merge_batch(
            self.store, req.ops, self._writable(), max_value_bytes=self.config.max_value_bytes
        )
        cs = out.changes
        self.writer.submit(cs, maps=out.new_maps)
        if len(cs):
            self.replicas.route(cs)
        self.fanout.publish(cs)
        achieved = APPLIED
        wc = int(req.write_concern)
        if wc >= REPLICATED:
            # An empty batch still waits: it is a barrier for everything applied before it.
            parts = out.partitions if out.partitions is not None else np.zeros(0, dtype=np.intp)
            timeout = (req.timeout_ms or self.config.write_timeout_ms) / 1000.0
            achieved = await self._wait_concern(wc, parts, timeout)
        resp = storage_pb2.ApplyResponse(
            status=out.statuses,  # type: ignore[arg-type]
            achieved=achieved,  # type: ignore[arg-type]
            table_version=self.table.version,
        )
        if out.errors:
            resp.error_index.extend(i for i, _ in out.errors)
            resp.error_message.extend(m for _, m in out.errors)
        return resp

    async def _wait_concern(self, wc: int, parts: npt.NDArray[np.intp], timeout: float) -> int:
        waits = [self.replicas.wait(parts, timeout)]
        if wc >= PERSISTED:
            waits.append(self.writer.wait_durable(self.writer.submitted, timeout))
        results = await asyncio.gather(*waits)
        if not results[0]:
            return APPLIED
        if wc >= PERSISTED and results[-1]:
            return PERSISTED
        return REPLICATED

    async def replicate(self, req: storage_pb2.ReplicateRequest) -> storage_pb2.ReplicateResponse:
        """Apply changes forwarded by the primary of some of our backup partitions.

        Changes of partitions this node now owns (the table moved them here while the old owner
        still had them queued) are merged as primary writes: they get this node's sequence
        numbers, go to its backups and its change feed. Changes of partitions this node holds
        for another owner, or not at all, are left out: their owner has them.
        """
        if req.table_version > self.table.version and not await self._catch_up_table(
            req.table_version
        ):
            raise TableBehind(
                f"node {self.node_id} has table version {self.table.version}, "
                f"{req.from_node} sent {req.table_version}; retry"
            )
        owner = req.from_node
        held = self.backup_mask & np.array([o == owner for o in self.table.owners], dtype=bool)
        applied = 0
        seqs = self.store.seqs
        held_parts = np.flatnonzero(held).tolist()
        if any(seqs[p] < base for p, base in req.base_seqs.items() if 0 <= p < PARTITION_COUNT):
            return storage_pb2.ReplicateResponse(
                behind=True, partition_seqs={p: seqs[p] for p in held_parts}
            )
        if len(req.ops.keys):
            big = max(self.config.max_value_bytes, 1 << 30)
            out = merge_batch(
                self.store,
                req.ops,
                held,
                max_value_bytes=big,
                given_seqs=list(req.seqs),
                primary=False,
            )
            refused = [(i, m) for i, m in out.errors if out.statuses[i] != OP_NOT_OWNER]
            if refused:
                log.warning(
                    "%d replicated ops from %s refused, first: %s",
                    len(refused),
                    owner,
                    refused[0][1],
                )
            self.writer.submit(out.changes, maps=out.new_maps)
            self.fanout.publish(out.changes)
            applied = sum(1 for s in out.statuses if s == OP_APPLIED)
            parts = out.partitions
            writable = self._writable()
            if parts is not None and writable[parts].any():
                forwarded = merge_batch(self.store, req.ops, writable & ~held, max_value_bytes=big)
                cs = forwarded.changes
                self.writer.submit(cs, maps=forwarded.new_maps)
                if len(cs):
                    self.replicas.route(cs)
                    log.info("%d writes of %s merged here as their new owner", len(cs), owner)
                self.fanout.publish(cs)
                applied += sum(1 for s in forwarded.statuses if s == OP_APPLIED)
        if req.counters:
            self._merge_replicated_counters(req.counters, held)
        return storage_pb2.ReplicateResponse(
            applied=applied, partition_seqs={p: seqs[p] for p in held_parts}
        )

    # --- reads --------------------------------------------------------------------------------

    def _partitions(self, requested: Sequence[int]) -> list[int]:
        if not requested:
            return self.primaries
        parts = list(requested)
        bad = [p for p in parts if not (0 <= p < PARTITION_COUNT) or not self.held_mask[p]]
        if bad:
            raise NotHeld(f"node {self.node_id} does not hold partitions {bad[:10]}")
        return parts

    def get(self, req: storage_pb2.GetRequest) -> common_pb2.RecordBatch:
        keys = list(req.keys)
        parts = partitions_of(keys).astype(np.intp)
        if len(keys) and not self.held_mask[parts].all():
            missing = sorted(set(parts[~self.held_mask[parts]].tolist()))
            raise NotHeld(f"node {self.node_id} does not hold partitions {missing[:10]}")
        page = RecordPageBuilder(req.map_name)
        for p, key, tag, rec in self.store.get(req.map_name, keys, parts.tolist()):
            page.add(p, key, tag, rec)
        return page.build()

    def scan(self, req: storage_pb2.ScanRequest) -> AsyncIterator[common_pb2.RecordBatch]:
        parts = self._partitions(req.partitions)
        pages = scan_pages(
            self.store,
            req.map_name,
            parts,
            predicate=req.predicate,
            is_where=req.predicate_is_where,
            fields=list(req.fields),
            limit=req.limit,
            include_tombstones=req.include_tombstones,
            page_size=req.page_size or self.config.scan_page_size,
            now_ms=int(time.time() * 1000),
        )

        async def gen() -> AsyncIterator[common_pb2.RecordBatch]:
            for page in pages:
                yield page

        return gen()

    def leaf_sums(self, req: storage_pb2.LeafSumsRequest) -> storage_pb2.LeafSumsResponse:
        parts = self._partitions(req.partitions)
        sums, kind, count = self.store.leaf_sums(req.map_name, parts)
        return storage_pb2.LeafSumsResponse(
            sums=sums.astype("<u4", copy=False).tobytes(),
            kind=kind,  # type: ignore[arg-type]
            record_count=count,
        )

    def bucket_records(self, req: storage_pb2.BucketRecordsRequest) -> common_pb2.RecordBatch:
        parts = self._partitions(req.partitions)
        paths = ([req.path] if req.path or not req.paths else []) + list(req.paths)
        page = RecordPageBuilder(req.map_name)
        for p, key, tag, rec in self.store.bucket_rows(req.map_name, paths, parts):
            page.add(p, key, tag, rec)
        return page.build()

    def maps(self) -> storage_pb2.MapsResponse:
        return storage_pb2.MapsResponse(
            maps=[
                storage_pb2.MapInfo(
                    name=name,
                    kind=m.kind,  # type: ignore[arg-type]
                    record_count=self.store.record_count(name, self.primaries),
                )
                for name, m in self.store.maps.items()
            ]
        )

    def change_feed(
        self, req: storage_pb2.ChangeFeedRequest
    ) -> AsyncIterator[storage_pb2.ChangeBatch]:
        explicit = bool(req.partitions)
        parts = self._partitions(req.partitions)
        filt = FeedFilter(
            frozenset(req.map_names) if req.map_names else None,
            frozenset(parts),
            primaries_only=not explicit,
        )
        return stream_changes(
            self.fanout,
            self.store,
            self.node_id,
            req.subscriber or "?",
            filt,
            dict(req.from_seq),
            live_only=req.live_only,
            linger_s=req.linger_ms / 1000.0,
        )

    def partition_info(self) -> storage_pb2.PartitionInfoResponse:
        t = self.table
        return storage_pb2.PartitionInfoResponse(
            node_id=self.node_id,
            table_version=t.version,
            nodes=[storage_pb2.NodeInfo(node_id=n, address=a) for n, a in t.addresses.items()],
            partitions=[
                storage_pb2.PartitionAssignment(
                    partition=p, owner=t.owners[p], backups=t.backups[p]
                )
                for p in range(PARTITION_COUNT)
            ],
        )

    # --- topics and counters ------------------------------------------------------------------

    def publish(self, msg: storage_pb2.Broadcast) -> None:
        self.broadcasts.publish(msg)

    def _counter_owned(self, name: str) -> None:
        p = partition_of(name)
        if not self._writable()[p]:
            raise NotHeld(
                f"counter {name!r} lives in partition {p}, owned by {self.table.owners[p]}"
            )

    def _merge_replicated_counters(
        self, states: Sequence[storage_pb2.CounterState], held: npt.NDArray[np.bool_]
    ) -> None:
        """Counter states from the owner of partitions we back up (others are left out)."""
        changed = {}
        for st in states:
            if held[partition_of(st.name)] and self.counters.merge(
                st.name, st.positive, st.negative
            ):
                changed[st.name] = self.counters.encode(st.name)
        if changed:
            self.writer.submit(counters=changed)

    def _counter_states(self, partitions: Collection[int]) -> list[storage_pb2.CounterState]:
        """Current states of the counters that live in ``partitions`` (for a backup's resync)."""
        out = []
        for name in self.counters.names():
            if partition_of(name) in partitions:
                pos, neg = self.counters.get(name)
                out.append(storage_pb2.CounterState(name=name, positive=pos, negative=neg))
        return out

    def counter_merge(self, state: storage_pb2.CounterState) -> storage_pb2.CounterState:
        self._counter_owned(state.name)
        if self.counters.merge(state.name, state.positive, state.negative):
            self.writer.submit(counters={state.name: self.counters.encode(state.name)})
            pos, neg = self.counters.get(state.name)
            self.replicas.route_counter(
                partition_of(state.name),
                storage_pb2.CounterState(name=state.name, positive=pos, negative=neg),
            )
            self.broadcasts.publish(
                storage_pb2.Broadcast(
                    counter=storage_pb2.CounterState(
                        name=state.name, positive=pos, negative=neg, origin=state.origin
                    )
                )
            )
        pos, neg = self.counters.get(state.name)
        return storage_pb2.CounterState(name=state.name, positive=pos, negative=neg)

    def counter_get(self, req: storage_pb2.CounterGetRequest) -> storage_pb2.CounterState:
        self._counter_owned(req.name)
        pos, neg = self.counters.get(req.name)
        return storage_pb2.CounterState(name=req.name, positive=pos, negative=neg)
