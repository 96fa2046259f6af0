"""Where partitions live: the partition table, the storage nodes' channels, and the choice of a
node per partition that avoids nodes which already failed a job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping, Sequence

import grpc

from libs.cluster.partition_table import PartitionTable
from libs.storage_client import CHANNEL_OPTIONS
from topgun_rpc import fragment_pb2, fragment_pb2_grpc, storage_pb2, storage_pb2_grpc

log = logging.getLogger(__name__)


class NoReplica(RuntimeError):
    """Every node that holds some partition has failed."""


class Topology:
    def __init__(self, table: PartitionTable, *, rpc_timeout: float = 3.0) -> None:
        self.table = table
        self.rpc_timeout = rpc_timeout
        self._channels: dict[str, grpc.aio.Channel] = {}

    @classmethod
    def static(
        cls, nodes: Sequence[tuple[str, str]], backup_count: int, *, rpc_timeout: float = 3.0
    ) -> Topology:
        table = PartitionTable.static(
            [n for n, _ in nodes], backup_count=backup_count, addresses=dict(nodes)
        )
        return cls(table, rpc_timeout=rpc_timeout)

    def _channel(self, node: str) -> grpc.aio.Channel:
        address = self.table.addresses.get(node)
        if not address:
            raise NoReplica(f"no address for storage node {node!r}")
        ch = self._channels.get(address)  # by address: a node that moved gets a new channel
        if ch is None:
            ch = self._channels[address] = grpc.aio.insecure_channel(
                address, options=CHANNEL_OPTIONS
            )
        return ch

    def fragments(self, node: str) -> fragment_pb2_grpc.FragmentsStub:
        return fragment_pb2_grpc.FragmentsStub(self._channel(node))

    def assign(
        self, partitions: Collection[int], avoid: Collection[str] = ()
    ) -> dict[str, list[int]]:
        """Partitions grouped by the node to read them from: the owner, else the first backup
        that has not failed."""
        out: dict[str, list[int]] = {}
        t = self.table
        for p in sorted(partitions):
            for node in (t.owners[p], *t.backups[p]):
                if node not in avoid:
                    out.setdefault(node, []).append(p)
                    break
            else:
                raise NoReplica(
                    f"partition {p}: its owner {t.owners[p]} and backups {list(t.backups[p])} "
                    "all failed"
                )
        return out

    async def refresh(self, avoid: Collection[str] = (), *, newer_only: bool = False) -> None:
        """Adopt the newest partition table any reachable node believes in (with
        ``newer_only``, only one of a higher version than the current)."""
        best: PartitionTable | None = None
        for node in self.table.nodes:
            if node in avoid:
                continue
            stub = storage_pb2_grpc.StorageStub(self._channel(node))
            try:
                info = await stub.PartitionInfo(
                    storage_pb2.PartitionInfoRequest(), timeout=self.rpc_timeout
                )
            except grpc.aio.AioRpcError:
                continue
            if best is not None and info.table_version <= best.version:
                continue
            addresses: Mapping[str, str] = {n.node_id: n.address for n in info.nodes}
            if len(info.partitions) != len(self.table.owners):
                continue
            parts = sorted(info.partitions, key=lambda a: a.partition)
            best = PartitionTable(
                info.table_version,
                tuple(a.owner for a in parts),
                tuple(tuple(a.backups) for a in parts),
                {**self.table.addresses, **addresses},
            )
        if best is None:
            return
        if best.version > self.table.version or (
            not newer_only and best.version == self.table.version
        ):
            if best.owners != self.table.owners or best.backups != self.table.backups:
                log.info("partition table version %d adopted", best.version)
            self.table = best

    async def close(self) -> None:
        for ch in self._channels.values():
            with contextlib.suppress(Exception):
                await ch.close(None)
        self._channels.clear()

    async def cancel_everywhere(self, job_id: str, nodes: Collection[str]) -> None:
        """Best effort: ask ``nodes`` to stop every fragment of ``job_id``."""

        async def one(node: str) -> None:
            with contextlib.suppress(grpc.aio.AioRpcError, NoReplica):
                await self.fragments(node).CancelFragment(
                    fragment_pb2.CancelFragmentRequest(job_id=job_id), timeout=self.rpc_timeout
                )

        await asyncio.gather(*(one(n) for n in nodes))
