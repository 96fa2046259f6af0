"""Primary -> backup replication: one Replicator per backup peer ships, in order and in batches,
the changes applied on the partitions this node is primary of and the peer backs up.

The backup merges them with the same CRDT rules and keeps the primary's sequence numbers, so a
promoted backup continues the same change feed. ``wait(mark)`` is what a REPLICATED write
concern awaits.

Resync: at start, and whenever the peer was unreachable for longer than the queue could hold,
the replicator asks the peer for its seq per partition (a Replicate with no ops) and sends the
current state of everything changed after those seqs, straight from the store. A peer that
reports a seq beyond ours holds another lineage of the partition (it was its owner before a
failover or a move): it gets the partition from the start. This resync is also how a partition
migrates: a node that becomes a backup of a partition starts empty and receives a snapshot of it,
then the live changes.

PN counters ride the same requests: ``submit_counter`` queues a counter's current state (a later
state replaces a queued one, since states only grow), and a resync sends every counter of the
partitions in scope.

When the partition table changes, ``retarget`` gives a replicator its new partition set (a grown
set triggers a resync), ``retire`` lets it finish sending what is queued and stop (the peer is
still alive but no longer backs anything of ours), and ``abandon`` stops it at once and fails its
waiters (the peer is gone).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Collection

import grpc

from libs.rpc import RequestStream
from libs.storage_client import CHANNEL_OPTIONS, StorageError, request_stream
from services.storage.changes import ChangeSet
from services.storage.partition_store import PartitionStore
from topgun_rpc import storage_pb2, storage_pb2_grpc

log = logging.getLogger(__name__)

SEND_CHUNK = 5000
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0


class Replicator:
    def __init__(
        self,
        *,
        node_id: str,
        peer_id: str,
        address: str,
        partitions: frozenset[int],
        store: PartitionStore,
        table_version: int,
        max_pending: int = 500_000,
        call_timeout: float = 10.0,
        counters: Callable[[Collection[int]], list[storage_pb2.CounterState]] | None = None,
    ) -> None:
        self.node_id = node_id
        self.peer_id = peer_id
        self.address = address
        self.partitions = partitions
        self._store = store
        self._table_version = table_version
        self._max_pending = max_pending
        self._timeout = call_timeout
        self._pending: list[ChangeSet] = []
        self._pending_n = 0
        self._counters: dict[str, storage_pb2.CounterState] = {}
        self._all_counters = counters or (lambda partitions: [])
        self._submitted = 0
        self._done = 0
        self._resync = True
        self._waiters: list[tuple[int, int, asyncio.Future[bool]]] = []
        self._tie = 0
        self._wake = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self.connected = False
        self.sent_changes = 0
        self._retiring = False
        self._abandoned = False

    def retarget(self, partitions: frozenset[int], table_version: int) -> None:
        """The partitions the peer backs up for us under a new table version."""
        grown = not partitions <= self.partitions
        self.partitions = partitions
        self._table_version = table_version
        self._retiring = False
        if grown:
            self._resync = True
            self._wake.set()

    def retire(self) -> None:
        """Send what is queued, then stop (``run`` returns)."""
        self._retiring = True
        self._wake.set()

    def abandon(self) -> None:
        """The peer is gone: fail every waiter now (the caller cancels ``run``)."""
        self._abandoned = True
        while self._waiters:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_result(False)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._resync and not self._counters

    def submit_counter(self, state: storage_pb2.CounterState) -> int:
        """Queue a counter's current state (its partition is one this peer backs up)."""
        self._counters[state.name] = state
        self._submitted += 1
        self._wake.set()
        return self._submitted

    def submit(self, cs: ChangeSet) -> int:
        """Queue changes (already restricted to this peer's partitions); returns their mark."""
        if not len(cs):
            return self._submitted
        self._submitted += 1
        if self._resync:
            # The coming resync reads the store, which already holds these changes.
            pass
        elif self._pending_n + len(cs) > self._max_pending:
            log.warning(
                "backup %s is %d changes behind; resyncing from the store",
                self.peer_id,
                self._pending_n,
            )
            self._pending.clear()
            self._pending_n = 0
            self._resync = True
        else:
            self._pending.append(cs)
            self._pending_n += len(cs)
        self._wake.set()
        return self._submitted

    @property
    def submitted(self) -> int:
        return self._submitted

    def barrier(self) -> int:
        """A mark that is reached once everything queued now, and any resync due now (e.g. of
        partitions just added by ``retarget``), has been applied by the peer."""
        self._submitted += 1
        self._wake.set()
        return self._submitted

    async def wait(self, mark: int, timeout: float) -> bool:
        """True once the peer applied everything up to ``mark``; False on timeout or when the
        peer was abandoned."""
        if mark <= self._done:
            return True
        if self._abandoned:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._tie += 1
        heapq.heappush(self._waiters, (mark, self._tie, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return fut.result()

    def _resolve(self, mark: int) -> None:
        self._done = max(self._done, mark)
        while self._waiters and self._waiters[0][0] <= self._done:
            fut = heapq.heappop(self._waiters)[2]
            if not fut.done():
                fut.set_result(True)

    async def run(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        stub: RequestStream[storage_pb2.ReplicateRequest, storage_pb2.ReplicateResponse] = (
            request_stream(
                storage_pb2_grpc.StorageStub(self._channel).ReplicateStream, self.address
            )
        )
        acked: dict[int, int] = {}  # per partition: the seq the backup is known to hold
        try:
            while True:
                if not self._resync and not self._pending and not self._counters:
                    # Idle: everything submitted so far (barriers included) has been sent.
                    self._resolve(self._submitted)
                    if self._retiring:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self._resync:
                    resp = await self._call_until_ok(stub, ChangeSet(), {})
                    seqs = self._store.seqs
                    # A seq beyond ours is another lineage of the partition: start it over.
                    acked = {p: s for p, s in resp.partition_seqs.items() if s <= seqs[p]}
                    mark = self._submitted
                    # Queued changes of partitions we no longer replicate to this peer (the
                    # table moved them) still go out: the store has their current state.
                    scope = set(self.partitions)
                    for queued in self._pending:
                        scope.update(queued.partitions)
                    self._pending.clear()
                    self._pending_n = 0
                    self._resync = False
                    cs = self._store.changes_since(None, sorted(scope), acked)
                    self._counters.clear()
                    counters = self._all_counters(scope)
                    if len(cs):
                        log.info(
                            "resyncing %d changes of %d partitions to backup %s",
                            len(cs),
                            len(set(cs.partitions)),
                            self.peer_id,
                        )
                else:
                    mark = self._submitted
                    cs = ChangeSet.concat(self._pending) if self._pending else ChangeSet()
                    self._pending = []
                    self._pending_n = 0
                    counters = list(self._counters.values())
                    self._counters.clear()
                n = len(cs)
                if counters and n == 0:
                    resp = await self._call_until_ok(stub, cs, {}, counters)
                    if resp.behind:
                        self._resync = True
                        continue
                for start in range(0, n, SEND_CHUNK):
                    part = (
                        cs
                        if n <= SEND_CHUNK
                        else cs.select(range(start, min(n, start + SEND_CHUNK)))
                    )
                    base = {p: acked.get(p, 0) for p in set(part.partitions)}
                    resp = await self._call_until_ok(
                        stub, part, base, counters if start == 0 else ()
                    )
                    if resp.behind:
                        log.warning("backup %s lost state; resyncing from the store", self.peer_id)
                        self._resync = True
                        break
                    for p, seq in zip(part.partitions, part.seqs, strict=True):
                        if seq > acked.get(p, 0):
                            acked[p] = seq
                if self._resync:
                    continue
                self.sent_changes += n
                self._resolve(mark)
        finally:
            await stub.close()
            await self._channel.close(None)

    async def _call_until_ok(
        self,
        stub: RequestStream[storage_pb2.ReplicateRequest, storage_pb2.ReplicateResponse],
        cs: ChangeSet,
        base_seqs: dict[int, int],
        counters: Collection[storage_pb2.CounterState] = (),
    ) -> storage_pb2.ReplicateResponse:
        req = storage_pb2.ReplicateRequest(
            ops=cs.op_batch(),
            seqs=cs.seqs,
            from_node=self.node_id,
            table_version=self._table_version,
            base_seqs=base_seqs,
            counters=counters,
        )
        delay = RETRY_MIN_S
        while True:
            try:
                resp = await stub.request(req, self._timeout)
            except StorageError as e:
                if self.connected:
                    code = e.code.name if e.code else "?"
                    log.warning("backup %s unreachable (%s); retrying", self.peer_id, code)
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            if not self.connected:
                log.info("backup %s at %s connected", self.peer_id, self.address)
            self.connected = True
            return resp
