"""The cluster coordinator: one at a time, elected through the lease key, computes and writes the
partition table whenever the members change.

Every storage node runs a ``Coordinator``; each tick it tries to take or renew the lease and, while
it holds it, compares the table with the live members and writes ``rebalance.step`` of it as a
compare-and-set on the revision it read. Two nodes that both believe they hold the lease (one
paused past its lease) can never both write: the second CAS fails and it re-reads.

What a tick decides from (all read from the store, so any node can take over at any time):

- storage members and their incarnations (``started_ms``), gRPC addresses and ``synced`` meta
  (the table version whose replicas they reported caught up);
- edge members and their WebSocket URLs, for the table's ``endpoints`` (the edge colocated with a
  storage node, named by its ``storage`` meta, else the edges dealt round-robin).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from libs.cluster.coordination import Coordination, MemberInfo
from libs.cluster.membership import MembersView
from libs.cluster.partition_table import NodeId, PartitionTable
from libs.cluster.rebalance import dead_nodes, step
from libs.crdt.hashing import PARTITION_COUNT

log = logging.getLogger(__name__)

SYNCED_META = "synced"
STORAGE_META = "storage"


def edge_endpoints(
    storage: Mapping[NodeId, MemberInfo], edges: Mapping[NodeId, MemberInfo]
) -> dict[NodeId, str]:
    """Per storage node, the WebSocket URL of the edge in front of it: its colocated edge, else
    the live edges dealt round-robin over the storage nodes (sorted, so every coordinator agrees)."""
    urls = sorted({e.websocket for e in edges.values() if e.websocket})
    colocated = {e.meta.get(STORAGE_META, ""): e.websocket for e in edges.values() if e.websocket}
    out: dict[NodeId, str] = {}
    for i, node in enumerate(sorted(storage)):
        url = colocated.get(node)
        if url:
            out[node] = url
        elif urls:
            out[node] = urls[i % len(urls)]
    return out


def synced_nodes(table: PartitionTable, storage: Mapping[NodeId, MemberInfo]) -> set[NodeId]:
    """Nodes that reported their replicas caught up with ``table`` (this incarnation of them)."""
    out = set()
    for n, m in storage.items():
        try:
            v = int(m.meta.get(SYNCED_META, "0"))
        except ValueError:
            continue
        if v >= table.version and table.epochs.get(n, m.started_ms) == m.started_ms:
            out.add(n)
    return out


class Coordinator:
    def __init__(
        self,
        coord: Coordination,
        members: MembersView,
        holder: str,
        *,
        backup_count: int = 1,
        tick_s: float = 0.2,
        expected_members: int = 0,
        settle_s: float = 3.0,
        max_moves: int = PARTITION_COUNT,
        store_health: Callable[[], float] | None = None,
    ) -> None:
        self._coord = coord
        self._members = members
        self.holder = holder
        self.backup_count = backup_count
        self.tick_s = tick_s
        self.expected_members = expected_members
        self.settle_s = settle_s
        self.max_moves = max_moves
        self.is_leader = False
        self.writes = 0
        self._first_seen: float | None = None
        # Seconds this process's own membership heartbeats have been getting through without a
        # break (the coordinator runs inside a member; see ClusterMember.healthy_for).
        self._store_health = store_health or (lambda: float("inf"))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                leader = await asyncio.wait_for(
                    self._coord.acquire_or_renew_lease(self.holder), self._coord.lease_ttl
                )

                if leader != self.is_leader:
                    log.info(
                        "%s %s the coordinator", self.holder, "is now" if leader else "is no longer"
                    )
                self.is_leader = leader
                if leader:
                    await asyncio.wait_for(self.tick(), max(5.0, self._coord.lease_ttl))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.is_leader = False
                log.warning("coordinator tick failed: %r", exc)
            self._members.changed.clear()
            waits = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._members.changed.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=self.tick_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        if self.is_leader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._coord.release_lease(self.holder), 2.0)

    def _settled(self, storage: Mapping[NodeId, MemberInfo]) -> bool:
        """Before the first table: wait for the expected members, or for the settle time."""
        now = time.monotonic()
        if self._first_seen is None:
            self._first_seen = now
        if self.expected_members and len(storage) >= self.expected_members:
            return True
        return now - self._first_seen >= self.settle_s

    async def tick(self) -> PartitionTable | None:
        """One decision; returns the table written, if any."""
        storage = self._members.alive("storage")
        if not storage:
            return None
        edges = self._members.alive("edge")
        table, revision = await self._coord.load_table()
        if table is None and not self._settled(storage):
            return None
        members = {n: m.started_ms for n, m in storage.items()}
        if table is not None and dead_nodes(table, members) - set(members):
            # Declaring a silent node gone needs a view that can be trusted: this member's own
            # heartbeats have been getting through for a whole member TTL (so after an outage of
            # the store itself, e.g. a JetStream leader election, every live member had the same
            # TTL to get its heartbeats through, three of them), and a direct read of the bucket
            # agrees with the watch. (A node that restarted is known gone at once: its new
            # incarnation is heartbeating.)
            if self._store_health() < self._coord.member_ttl:
                return None
            storage = await self._coord.members("storage")
            members = {n: m.started_ms for n, m in storage.items()}
            if not storage:
                return None
        synced = synced_nodes(table, storage) if table is not None else set()
        following = step(
            table,
            members,
            synced=synced,
            backup_count=self.backup_count,
            addresses={n: m.address for n, m in storage.items()},
            endpoints=edge_endpoints(storage, edges),
            max_moves=self.max_moves,
        )
        if table is not None and following.same_layout(table):
            return None
        written = await self._coord.cas_table(following, revision)
        if written is None:
            log.info("table version %d lost a compare-and-set race; re-reading", following.version)
            return None
        self.writes += 1
        self._log_change(table, following, members)
        return following

    @staticmethod
    def _log_change(
        before: PartitionTable | None, after: PartitionTable, members: Mapping[NodeId, int]
    ) -> None:
        if before is None:
            log.info(
                "partition table version %d: %d members %s",
                after.version,
                len(after.nodes),
                ", ".join(after.nodes),
            )
            return
        dead = dead_nodes(before, members)
        flipped = sum(
            1
            for p in range(PARTITION_COUNT)
            if before.owners[p] != after.owners[p] and before.owners[p] not in dead
        )
        promoted = sum(
            1
            for p in range(PARTITION_COUNT)
            if before.owners[p] != after.owners[p] and before.owners[p] in dead
        )
        counts = after.counts()
        log.info(
            "partition table version %d: gone %s, %d promoted, %d moved, %d migrating; "
            "primaries/backups %s",
            after.version,
            sorted(dead) or "-",
            promoted,
            flipped,
            len(after.pending),
            " ".join(f"{n}={p}/{b}" for n, (p, b) in sorted(counts.items())),
        )
