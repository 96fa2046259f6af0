"""ClusterRouter: a StorageRouter over a partition table that moves.

While partitions migrate or fail over, an Apply can reach a node that no longer owns some of its
ops (OP_NOT_OWNER), a node that is gone (UNAVAILABLE), or an owner whose backup vanished before
the write reached it (an ``achieved`` level below the one asked for). The router sends such ops
again, to the owner of the newest table (it waits briefly for a newer version when the one it
used is the latest it has), until they are placed or ``retry_s`` ran out. Re-sending is safe:
ops are CRDT merges, so an op applied twice changes nothing the second time, and an owner that
already holds it acknowledges it once it reached the write concern.

Reads (get, leaf sums, bucket records) are retried the same way on NotOwner / unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from libs.cluster import NodeId, PartitionTable
from libs.storage_client import (
    ApplyResult,
    LeafSums,
    NotOwner,
    OpBatchBuilder,
    OpStatus,
    RoutedApplyResult,
    StorageClient,
    StorageRouter,
    StorageUnavailable,
    StoredRecord,
    WriteConcern,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_OWNER = int(OpStatus.OP_NOT_OWNER)
UNAVAILABLE = int(OpStatus.OP_UNAVAILABLE)
REPLICATED = int(WriteConcern.REPLICATED)
BACKOFF_S = (0.02, 0.05, 0.1, 0.2, 0.4, 0.5)


class ClusterRouter(StorageRouter):
    def __init__(
        self,
        table: PartitionTable,
        clients: Mapping[NodeId, StorageClient],
        *,
        retry_s: float = 10.0,
    ) -> None:
        super().__init__(table, clients)
        self.retry_s = retry_s
        self.retried_ops = 0
        self._changed: asyncio.Event | None = None

    def update(self, table: PartitionTable, clients: Mapping[NodeId, StorageClient]) -> None:
        super().update(table, clients)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_newer(self, version: int, timeout: float) -> bool:
        """True once the router has a table newer than ``version`` (False after ``timeout``)."""
        if self.table.version > version:
            return True
        if self._changed is None:
            self._changed = asyncio.Event()
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        return self.table.version > version

    async def _pause(self, version: int, attempt: int, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            await self.wait_newer(
                version, min(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], remaining)
            )

    # --- writes -------------------------------------------------------------------------------

    async def apply(
        self,
        builder: OpBatchBuilder,
        write_concern: int = WriteConcern.APPLIED,
        *,
        timeout: float | None = None,
    ) -> RoutedApplyResult:
        n = len(builder)
        statuses = [0] * n
        errors: dict[int, str] = {}
        if n == 0:
            return RoutedApplyResult(statuses, errors, write_concern)
        partitions = builder.partitions.tolist()
        deadline = time.monotonic() + self.retry_s
        achieved: int | None = None
        best: dict[int, int] = {}  # op -> highest level reached, for ops short of the concern
        todo = list(range(n))
        attempt = 0
        while True:
            table = self.table
            groups: dict[NodeId, list[int]] = {}
            owners = table.owners
            for i in todo:
                groups.setdefault(owners[partitions[i]], []).append(i)
            names = list(groups)
            results = await asyncio.gather(
                *(
                    self._apply_one(o, builder, groups[o], write_concern, timeout, table)
                    for o in names
                ),
                return_exceptions=True,
            )
            again: list[int] = []
            for owner, res in zip(names, results, strict=True):
                idx = groups[owner]
                if isinstance(res, BaseException):
                    if not isinstance(res, Exception):
                        raise res
                    for i in idx:
                        statuses[i] = UNAVAILABLE
                        errors[i] = f"storage node {owner} unavailable: {res}"
                    again.extend(idx)
                    continue
                short = write_concern >= REPLICATED and res.achieved < write_concern
                failed = res.errors
                for j, (i, s) in enumerate(zip(idx, res.statuses, strict=True)):
                    statuses[i] = s
                    if j in failed:
                        errors[i] = failed[j]
                        if s in (NOT_OWNER, UNAVAILABLE):
                            again.append(i)
                        continue
                    errors.pop(i, None)
                    if short:
                        best[i] = max(best.get(i, 0), res.achieved)
                        again.append(i)
                    else:
                        best.pop(i, None)
                if not short:
                    achieved = res.achieved if achieved is None else min(achieved, res.achieved)
            if not again:
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "%d of %d ops not placed at the write concern within %.1fs",
                    len(again),
                    n,
                    self.retry_s,
                )
                break
            self.retried_ops += len(again)
            await self._pause(table.version, attempt, deadline)
            attempt += 1
            todo = again
        for level in best.values():  # ops that never reached the concern report what they did
            achieved = level if achieved is None else min(achieved, level)
        return RoutedApplyResult(
            statuses, errors, WriteConcern.FIRE_AND_FORGET if achieved is None else achieved
        )

    async def _apply_one(
        self,
        owner: NodeId,
        builder: OpBatchBuilder,
        idx: list[int],
        write_concern: int,
        timeout: float | None,
        table: PartitionTable,
    ) -> ApplyResult:
        return await self.client_of(owner).apply(
            builder.select(idx), write_concern, timeout=timeout, table_version=table.version
        )

    # --- reads --------------------------------------------------------------------------------

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.retry_s
        attempt = 0
        while True:
            version = self.table.version
            try:
                return await call()
            except (NotOwner, StorageUnavailable):
                if time.monotonic() >= deadline:
                    raise
            await self._pause(version, attempt, deadline)
            attempt += 1

    async def get(
        self, map_name: str, keys: Sequence[str], *, timeout: float | None = None
    ) -> list[StoredRecord]:
        parent = super().get
        return await self._retrying(lambda: parent(map_name, keys, timeout=timeout))

    async def leaf_sums(self, map_name: str, *, timeout: float | None = None) -> LeafSums:
        parent = super().leaf_sums
        return await self._retrying(lambda: parent(map_name, timeout=timeout))

    async def scan_all(self, map_name: str, **kw: Any) -> list[StoredRecord]:
        parent = super().scan_all
        return await self._retrying(lambda: parent(map_name, **kw))

    async def bucket_records(
        self, map_name: str, paths: Sequence[str], *, timeout: float | None = None
    ) -> list[StoredRecord]:
        parent = super().bucket_records
        return await self._retrying(lambda: parent(map_name, paths, timeout=timeout))
