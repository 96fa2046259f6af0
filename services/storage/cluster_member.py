"""A storage node as a member of a NATS-coordinated cluster.

With ``--nats`` the node:

- registers itself (role ``storage``, its gRPC address, its incarnation = start time in ms) and
  keeps its key alive; until its first heartbeat and table load, and whenever its heartbeats
  stop getting through for most of the member TTL, it is fenced: it accepts no writes;
- follows the partition table and adopts every newer version (ownership masks, replicators);
- reports in its membership meta the table version its replicas caught up with (``synced``), which
  is what lets the coordinator flip a migrating partition or trim a backup;
- runs a coordinator candidate (one node at a time holds the lease and writes the table);
- publishes the changes it applies as primary, and its counter updates, on NATS subjects for the
  edges (``libs.cluster.subjects``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from libs.cluster import (
    MAX_PAYLOAD,
    SYNCED_META,
    ClusterMember,
    Coordination,
    Coordinator,
    MemberInfo,
    MembersView,
    PartitionTable,
    broadcast_subject,
    changes_subject,
)
from libs.crdt.hashing import PARTITION_COUNT
from services.storage.broadcasts import BroadcastDropped
from services.storage.change_feed import FeedFilter
from services.storage.changes import ChangeSet
from services.storage.config import StorageConfig
from services.storage.node import StorageNode
from topgun_rpc import storage_pb2

log = logging.getLogger(__name__)

ALL_PARTITIONS = frozenset(range(PARTITION_COUNT))
PUBLISH_DRAIN = 64  # change sets merged into one publish round when the queue has a backlog


class StorageClusterMember:
    def __init__(self, node: StorageNode, config: StorageConfig) -> None:
        self.node = node
        self.config = config
        self.coord: Coordination | None = None
        self.member: ClusterMember | None = None
        self.members: MembersView | None = None
        self.coordinator: Coordinator | None = None
        self.published_changes = 0

    async def start(self) -> None:
        """Connect, register and load the current table (call before serving)."""
        cfg = self.config
        coord = await Coordination.connect(
            cfg.nats_url,
            prefix=cfg.cluster_prefix,
            member_ttl=cfg.member_ttl_s,
            lease_ttl=cfg.member_ttl_s,
            replicas=cfg.nats_replicas,
            ready_timeout=cfg.nats_ready_timeout_s,
            name=f"storage {cfg.node_id}",
        )
        self.coord = coord
        epoch = int(time.time() * 1000)
        info = MemberInfo(
            cfg.node_id,
            "storage",
            address=cfg.address,
            started_ms=epoch,
            meta={SYNCED_META: "0"},
        )
        member = ClusterMember(coord, info)
        self.member = member
        node = self.node
        node.epoch = epoch
        node.fenced = lambda: member.fenced
        node.wait_table = member.wait_table
        # Until the cluster's table arrives this node holds nothing.
        node.table = dataclasses.replace(node.table, version=0, epochs={cfg.node_id: -1})
        node.adopt_table(node.table)
        node.replicas.on_synced = self._report_synced
        member.on_table(node.adopt_table)
        self.members = MembersView(coord)
        self.coordinator = Coordinator(
            coord,
            self.members,
            cfg.node_id,
            backup_count=cfg.backup_count,
            expected_members=cfg.expect_members,
            max_moves=cfg.max_migrations,
            store_health=member.healthy_for,
        )
        await member.register()
        log.info(
            "storage node %s joined the cluster at %s (incarnation %d, table version %d)",
            cfg.node_id,
            cfg.nats_url,
            epoch,
            node.table.version,
        )

    async def wait_in_table(self, timeout: float = 60.0) -> None:
        """Until a table names this incarnation (as owner or backup): the first table waits for
        the expected members, a joiner is staged within a tick or two."""
        assert self.member is not None
        deadline = time.monotonic() + timeout
        node = self.node
        while node.table.epochs.get(node.node_id) != node.epoch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("not in the partition table after %.0fs; serving anyway", timeout)
                return
            await self.member.wait_table(node.table.version + 1, remaining)

    def _report_synced(self, version: int) -> None:
        if self.member is not None:
            self.member.set_meta(**{SYNCED_META: str(version)})

    async def run(self, stop: asyncio.Event) -> None:
        assert self.member is not None and self.members is not None and self.coordinator
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.member.run(stop), name="cluster-member")
                tasks = [
                    tg.create_task(self.members.run(), name="members-view"),
                    tg.create_task(self.coordinator.run(stop), name="coordinator"),
                    tg.create_task(self._publish_changes(), name="nats-changes"),
                    tg.create_task(self._publish_broadcasts(), name="nats-broadcasts"),
                ]
                await stop.wait()
                tasks[0].cancel()
                tasks[2].cancel()
                tasks[3].cancel()
        finally:
            if self.coord is not None:
                await self.coord.close()

    # --- fan-out to the edges -------------------------------------------------------------------

    async def _publish_changes(self) -> None:
        assert self.coord is not None
        nc = self.coord.nc
        prefix = self.config.cluster_prefix
        filt = FeedFilter(None, ALL_PARTITIONS, primaries_only=True)
        fanout = self.node.fanout
        while True:
            sub = fanout.subscribe("nats", filt)
            try:
                while not sub.dropped:
                    sets = [await sub.queue.get()]
                    while len(sets) < PUBLISH_DRAIN and not sub.queue.empty():
                        sets.append(sub.queue.get_nowait())
                    cs = ChangeSet.concat(sets)
                    for name in cs.map_names:
                        part = cs.filter({name}, None) if len(cs.map_names) > 1 else cs
                        if not len(part):
                            continue
                        for payload in _payloads(part, self.node.node_id):
                            await nc.publish(changes_subject(prefix, name), payload)
                        self.published_changes += len(part)
                log.warning("NATS change publisher fell behind; live subscribers missed changes")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("publishing changes to NATS failed: %r", exc)
                await asyncio.sleep(0.2)
            finally:
                fanout.unsubscribe(sub)

    async def _publish_broadcasts(self) -> None:
        assert self.coord is not None
        nc = self.coord.nc
        subject = broadcast_subject(self.config.cluster_prefix)
        while True:
            try:
                async for item in self.node.broadcasts.stream("nats"):
                    await nc.publish(subject, item.SerializeToString())
            except asyncio.CancelledError:
                raise
            except BroadcastDropped:
                log.warning("NATS broadcast publisher fell behind; counter updates were missed")
            except Exception as exc:
                log.warning("publishing broadcasts to NATS failed: %r", exc)
                await asyncio.sleep(0.2)

    # --- the operator's view ----------------------------------------------------------------------

    @property
    def table(self) -> PartitionTable | None:
        return self.member.table if self.member else None


def _payloads(cs: ChangeSet, node_id: str) -> list[bytes]:
    """``cs`` as ChangeBatch messages under the NATS payload limit (split in halves as needed)."""
    data = storage_pb2.ChangeBatch(ops=cs.op_batch(), seqs=cs.seqs, node_id=node_id)
    raw = data.SerializeToString()
    if len(raw) <= MAX_PAYLOAD or len(cs) == 1:
        return [raw]
    half = len(cs) // 2
    return _payloads(cs.select(range(half)), node_id) + _payloads(
        cs.select(range(half, len(cs))), node_id
    )
