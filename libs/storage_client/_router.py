"""StorageRouter: one logical store over the storage nodes of a partition table.

It splits a batch by partition owner, sends one call per owner concurrently, and puts the
answers back in the caller's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.cluster.partition_table import NodeId, PartitionTable
from libs.crdt.hashing import partitions_of
from libs.storage_client._builder import OpBatchBuilder
from libs.storage_client._client import (
    LeafSums,
    StorageClient,
    add_leaf_sums,
)
from libs.storage_client._errors import StorageError
from libs.storage_client._records import StoredRecord
from topgun_rpc import common_pb2, storage_pb2

OP_UNAVAILABLE = storage_pb2.OP_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class RoutedApplyResult:
    """Per-op statuses in the builder's order, messages of failed ops by index, and the write
    concern that every owner which answered reached (the lowest of them)."""

    statuses: list[int]
    errors: dict[int, str]
    achieved: int

    @property
    def ok(self) -> bool:
        return not self.errors


class StorageRouter:
    """Routes calls to the owners of a ``PartitionTable`` through one ``StorageClient`` each."""

    def __init__(self, table: PartitionTable, clients: Mapping[NodeId, StorageClient]) -> None:
        self._table = table
        self._clients = dict(clients)

    @classmethod
    def connect(cls, table: PartitionTable, *, timeout: float = 5.0) -> StorageRouter:
        """A router with a client per node of ``table``, at the table's addresses."""
        clients = {n: StorageClient(a, timeout=timeout) for n, a in table.addresses.items()}
        return cls(table, clients)

    @property
    def table(self) -> PartitionTable:
        return self._table

    @property
    def clients(self) -> Mapping[NodeId, StorageClient]:
        return self._clients

    def update(self, table: PartitionTable, clients: Mapping[NodeId, StorageClient]) -> None:
        """Switch to a new table (and the clients of its nodes)."""
        self._table = table
        self._clients = dict(clients)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients.values()))

    def client_of(self, node: NodeId) -> StorageClient:
        try:
            return self._clients[node]
        except KeyError:
            raise StorageError(f"no client for storage node {node!r}") from None

    async def apply(
        self,
        builder: OpBatchBuilder,
        write_concern: int = common_pb2.APPLIED,
        *,
        timeout: float | None = None,
    ) -> RoutedApplyResult:
        """Send each owner its ops in one Apply, concurrently; statuses come back in order. Ops
        of an owner that could not be reached get OP_UNAVAILABLE."""
        n = len(builder)
        statuses = [0] * n
        errors: dict[int, str] = {}
        if n == 0:
            return RoutedApplyResult(statuses, errors, write_concern)
        groups = self._table.group_by_owner(builder.partitions.tolist())
        owners = list(groups)

        async def one(owner: NodeId) -> object:
            return await self.client_of(owner).apply(
                builder.select(groups[owner]),
                write_concern,
                timeout=timeout,
                table_version=self._table.version,
            )

        results = await asyncio.gather(*(one(o) for o in owners), return_exceptions=True)
        achieved: int | None = None
        for owner, res in zip(owners, results, strict=True):
            idx = groups[owner]
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                msg = f"storage node {owner} unavailable: {res}"
                for i in idx:
                    statuses[i] = OP_UNAVAILABLE
                    errors[i] = msg
                continue
            for i, s in zip(idx, res.statuses, strict=True):  # type: ignore[attr-defined]
                statuses[i] = s
            for j, m in res.errors.items():  # type: ignore[attr-defined]
                errors[idx[j]] = m
            a = res.achieved  # type: ignore[attr-defined]
            achieved = a if achieved is None else min(achieved, a)
        return RoutedApplyResult(
            statuses, errors, common_pb2.FIRE_AND_FORGET if achieved is None else achieved
        )

    async def get(
        self, map_name: str, keys: Sequence[str], *, timeout: float | None = None
    ) -> list[StoredRecord]:
        """Current records of ``keys`` from their owners (tombstones included)."""
        if not keys:
            return []
        groups = self._table.group_by_owner(partitions_of(keys).tolist())
        results = await asyncio.gather(
            *(
                self.client_of(o).get(map_name, [keys[i] for i in idx], timeout=timeout)
                for o, idx in groups.items()
            )
        )
        return [r for rs in results for r in rs]

    def _primaries(self) -> dict[NodeId, list[int]]:
        out: dict[NodeId, list[int]] = {}
        for p, o in enumerate(self._table.owners):
            out.setdefault(o, []).append(p)
        return out

    async def leaf_sums(self, map_name: str, *, timeout: float | None = None) -> LeafSums:
        """A map's whole leaf-sum array: every owner's share over the partitions the table gives
        it, added up."""
        owned = self._primaries()
        shares = await asyncio.gather(
            *(self.client_of(o).leaf_sums(map_name, ps, timeout=timeout) for o, ps in owned.items())
        )
        kind = max((s.kind for s in shares), default=0)
        total = add_leaf_sums(s.sums for s in shares)
        return LeafSums(total, kind, sum(s.record_count for s in shares))

    async def scan_all(self, map_name: str, **kw: Any) -> list[StoredRecord]:
        """Every row of a map's Scan from every owner, over the partitions the table gives it
        (one Scan per owner, concurrently); ``kw`` as for :meth:`StorageClient.scan_pages`."""
        owned = self._primaries()
        pages = await asyncio.gather(
            *(self.client_of(o).scan_all(map_name, partitions=ps, **kw) for o, ps in owned.items())
        )
        return [r for page in pages for r in page]

    async def bucket_records(
        self, map_name: str, paths: Sequence[str], *, timeout: float | None = None
    ) -> list[StoredRecord]:
        """The records under ``paths`` from every owner, in one call per owner."""
        if not paths:
            return []
        owned = self._primaries()
        results = await asyncio.gather(
            *(
                self.client_of(o).bucket_records(map_name, paths, ps, timeout=timeout)
                for o, ps in owned.items()
            )
        )
        return [r for rs in results for r in rs]
