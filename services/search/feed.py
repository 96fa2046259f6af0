"""Following the storage nodes: one change-feed stream per node, and scans for rebuilds.

Each node streams the changes of the partitions it is primary for, resuming after the positions
the indexer holds (a partition it has never seen starts at 0: the node first sends the current
state of every record, then live changes). A stream that breaks — node restarting, subscriber
dropped for falling behind, partition table moving — is reopened from the indexer's positions
after a short backoff; the indexer skips anything it has already seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from libs.storage_client import StorageClient, StorageError
from services.search.catalog import IndexCatalog
from services.search.indexer import ChangeColumns, Indexer, ScannedRecords
from topgun_rpc import storage_pb2

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
SCAN_PAGE = 2000
SCAN_TIMEOUT = 600.0
# The nodes hold a live change this long for others to join it: the indexer commits every
# ~100 ms anyway, and one stream message per write costs more than indexing the write.
FEED_LINGER_MS = 20


def columns_of(batch: storage_pb2.ChangeBatch) -> ChangeColumns:
    ops = batch.ops
    n = len(ops.keys)
    tags = list(ops.tags)
    values = list(ops.values)
    ttl_ms = list(ops.ttl_ms) if len(ops.ttl_ms) == n and any(ops.ttl_ms) else []
    return ChangeColumns(
        map_names=list(ops.map_names),
        map_index=list(ops.map_index),
        keys=list(ops.keys),
        kinds=list(ops.kinds),
        values=values if len(values) == n else [b""] * n,
        tags=tags if len(tags) == n else [""] * n,
        partitions=list(ops.partitions),
        seqs=list(batch.seqs),
        millis=list(ops.millis) if ttl_ms else [],
        ttl_ms=ttl_ms,
    )


class FeedFollower:
    """Keeps one change-feed stream per storage node open, feeding the indexer."""

    def __init__(
        self,
        clients: Sequence[StorageClient],
        indexer: Indexer,
        *,
        subscriber: str,
        map_names: Sequence[str] = (),
    ) -> None:
        self.clients = list(clients)
        self.indexer = indexer
        self.subscriber = subscriber
        self.map_names = list(map_names)
        self.caught_up: set[str] = set()  # addresses whose stream is live
        self.reconnects = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for c in self.clients:
                tg.create_task(self._follow(c), name=f"feed-{c.address}")

    async def _follow(self, client: StorageClient) -> None:
        backoff = BACKOFF_MIN
        while True:
            try:
                async for batch in client.change_feed_batches(
                    self.map_names,
                    dict(self.indexer.positions),
                    subscriber=self.subscriber,
                    linger_ms=FEED_LINGER_MS,
                ):
                    if batch.seqs:
                        await self.indexer.submit(columns_of(batch))
                    if batch.caught_up:
                        self.caught_up.add(client.address)
                        log.info("change feed of %s (%s) caught up", client.address, batch.node_id)
                    backoff = BACKOFF_MIN
                log.warning("change feed of %s ended; reopening", client.address)
            except StorageError as e:
                log.warning(
                    "change feed of %s broke (%s); reopening in %.1fs", client.address, e, backoff
                )
            self.caught_up.discard(client.address)
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)


async def unindexed_maps(
    clients: Sequence[StorageClient], catalog: IndexCatalog, *, timeout: float = 5.0
) -> list[str]:
    """Searchable maps the storage nodes hold records of but that have no index here: a map
    made searchable by a configuration change, or whose index folder went missing. The change
    feeds resume after changes that were never indexed for them, so they need a scan."""
    names: set[str] = set()
    for c in clients:
        try:
            names.update(m.name for m in await c.maps(timeout=timeout) if m.record_count)
        except StorageError as e:
            log.warning("cannot list the maps of %s (%s); skipping it", c.address, e)
    return sorted(
        n for n in names if catalog.get(n) is None and catalog.maps.spec_for(n) is not None
    )


class StorageScanner:
    """Scans a map on every node (each returns the partitions it is primary for)."""

    def __init__(self, clients: Sequence[StorageClient]) -> None:
        self.clients = list(clients)

    async def scan(self, map_name: str) -> AsyncIterator[ScannedRecords]:
        for client in self.clients:
            async for page in client.scan_pages(
                map_name, page_size=SCAN_PAGE, timeout=SCAN_TIMEOUT
            ):
                n = len(page.keys)
                tags = list(page.tags)
                ttl = len(page.ttl_ms) == n and any(page.ttl_ms)
                yield ScannedRecords(
                    keys=list(page.keys),
                    kinds=list(page.kinds),
                    values=list(page.values),
                    tags=tags if len(tags) == n else [""] * n,
                    millis=list(page.millis) if ttl else [],
                    ttl_ms=list(page.ttl_ms) if ttl else [],
                )
