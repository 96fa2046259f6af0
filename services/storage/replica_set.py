"""ReplicaSet: this node's replicators, one per backup peer, kept in line with the partition table.

``reconcile(table)`` runs whenever the node adopts a table: a peer that backs up some of our
primaries gets a replicator (a new one, or the running one retargeted); a peer that is still in
the table but backs up nothing of ours any more is retired (it finishes sending what is queued,
so writes accepted just before the table moved still reach the new owner); a peer that left the
table, or restarted as a new incarnation, is abandoned at once (its waiters fail, so a write
waiting for it answers with the level it did reach instead of hanging).

``synced_version`` is the newest table version for which every replicator has sent everything
queued up to the moment the table was adopted (a resync included): the coordinator reads it from
the node's membership meta before it lets a partition change owner or drop a backup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from libs.cluster.partition_table import NodeId, PartitionTable
from services.storage.changes import ChangeSet
from services.storage.partition_store import PartitionStore
from services.storage.replication import Replicator
from topgun_rpc import storage_pb2

CounterStates = Callable[[Collection[int]], list[storage_pb2.CounterState]]

log = logging.getLogger(__name__)

SYNC_WAIT_S = 3600.0


@dataclass(slots=True)
class _Peer:
    key: tuple[NodeId, str, int]  # (node, address, incarnation)
    replicator: Replicator
    mask: npt.NDArray[np.bool_]
    task: asyncio.Task[None]


class ReplicaSet:
    def __init__(
        self,
        node_id: NodeId,
        store: PartitionStore,
        *,
        on_synced: Callable[[int], None] | None = None,
        counters: CounterStates | None = None,
    ) -> None:
        self.node_id = node_id
        self._store = store
        self._counters = counters
        self._peers: dict[NodeId, _Peer] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self.on_synced = on_synced
        self.synced_version = 0
        self.table_version = 0

    # --- the table ----------------------------------------------------------------------------

    def reconcile(self, table: PartitionTable, *, serving: bool = True) -> None:
        """Match the replicators to ``table``; ``serving`` is False while this node holds no
        primaries (fenced, or not in the table)."""
        me = self.node_id
        needed: dict[NodeId, npt.NDArray[np.bool_]] = {}
        if serving:
            for p, (owner, backups) in enumerate(zip(table.owners, table.backups, strict=True)):
                if owner != me:
                    continue
                for b in backups:
                    if b == me:
                        continue
                    mask = needed.get(b)
                    if mask is None:
                        mask = needed[b] = np.zeros(len(table.owners), dtype=bool)
                    mask[p] = True
        for peer, mask in needed.items():
            key = (peer, table.addresses.get(peer, ""), table.epochs.get(peer, 0))
            parts = frozenset(np.flatnonzero(mask).tolist())
            current = self._peers.get(peer)
            if current is not None and current.key == key:
                current.replicator.retarget(parts, table.version)
                current.mask = mask
                continue
            if current is not None:
                self._drop(current, gone=True)
            if not key[1]:
                log.error("no address for backup %s in table version %d", peer, table.version)
                continue
            rep = Replicator(
                node_id=me,
                peer_id=peer,
                address=key[1],
                partitions=parts,
                store=self._store,
                table_version=table.version,
                counters=self._counters,
            )
            task = asyncio.get_running_loop().create_task(rep.run(), name=f"replicate-{peer}")
            task.add_done_callback(self._task_done)
            self._peers[peer] = _Peer(key, rep, mask, task)
        for peer in [p for p in self._peers if p not in needed]:
            entry = self._peers.pop(peer)
            still_there = peer in table.addresses and table.epochs.get(peer, 0) == entry.key[2]
            self._drop(entry, gone=not still_there)
        self.table_version = table.version
        self._track_sync(table.version)

    def _drop(self, entry: _Peer, *, gone: bool) -> None:
        if gone:
            entry.replicator.abandon()
            entry.task.cancel()
        else:
            entry.replicator.retire()
            self._retired.add(entry.task)
            entry.task.add_done_callback(self._retired.discard)

    def _track_sync(self, version: int) -> None:
        marks = [(p.replicator, p.replicator.barrier()) for p in self._peers.values()]
        if self._sync_task is not None:
            self._sync_task.cancel()

        async def synced() -> None:
            results = await asyncio.gather(*(r.wait(m, SYNC_WAIT_S) for r, m in marks))
            if all(results) and version == self.table_version:
                self.synced_version = version
                log.info("replicas caught up with table version %d", version)
                if self.on_synced is not None:
                    self.on_synced(version)

        self._sync_task = asyncio.get_running_loop().create_task(synced(), name="replica-sync")

    @staticmethod
    def _task_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("replicator %s failed", task.get_name(), exc_info=task.exception())

    # --- the write path -----------------------------------------------------------------------

    @property
    def replicators(self) -> list[Replicator]:
        return [p.replicator for p in self._peers.values()]

    def __bool__(self) -> bool:
        return bool(self._peers)

    def route(self, cs: ChangeSet) -> None:
        """Queue changes applied as primary for every peer that backs up their partitions."""
        if not self._peers:
            return
        parts = np.asarray(cs.partitions, dtype=np.intp)
        for peer in self._peers.values():
            sel = np.flatnonzero(peer.mask[parts])
            if len(sel) == len(cs):
                peer.replicator.submit(cs)
            elif len(sel):
                peer.replicator.submit(cs.select(sel.tolist()))

    def route_counter(self, partition: int, state: storage_pb2.CounterState) -> None:
        """Queue a PN counter's new state for every peer that backs up its partition."""
        for peer in self._peers.values():
            if peer.mask[partition]:
                peer.replicator.submit_counter(state)

    async def wait(self, parts: npt.NDArray[np.intp], timeout: float) -> bool:
        """True once every backup of ``parts`` applied everything queued so far."""
        reps = [p.replicator for p in self._peers.values() if p.mask[parts].any()]
        if not reps:
            return True
        results = await asyncio.gather(*(r.wait(r.submitted, timeout) for r in reps))
        return all(results)

    async def close(self) -> None:
        tasks = [p.task for p in self._peers.values()] + list(self._retired)
        if self._sync_task is not None:
            tasks.append(self._sync_task)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._peers.clear()
