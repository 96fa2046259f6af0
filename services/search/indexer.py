"""The indexer: the one task that applies change-feed batches to the map indexes, commits them in
small batches, remembers how far it got, and turns each commit into live-search updates.

Near-real-time policy: a change is applied to its map's index writer as soon as it arrives, and a
commit makes everything applied so far searchable once the oldest uncommitted change is
``commit_interval`` old, or earlier when ``max_uncommitted`` changes are waiting. At 2,000 writes/s
and 250 ms (the service's default) that is ~500 documents per commit, four commits a second.

Order of effects per commit: tantivy commits (off the event loop) → the state file with the
feed positions the commit covers → live updates. A crash anywhere in between replays changes
that were already indexed, which upserts make harmless.

Changes arrive in feed order per partition; a change whose sequence number is not above the
partition's position was seen before (a resumed or duplicated feed) and is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.search.catalog import IndexCatalog
from services.search.index import MapIndex, unpack_value
from services.search.live import ChangedDoc, LiveSearches, SearchUpdate
from services.search.state import SearchState, StateStore

log = logging.getLogger(__name__)

REBUILD_RETRY = 5.0  # seconds between attempts to rebuild from an unreachable storage
PURGE_INTERVAL = 5.0  # seconds between sweeps deleting documents whose record expired

# common.proto OpKind
PUT, REMOVE, OR_ADD, OR_REMOVE = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class ChangeColumns:
    """A batch of feed changes in columns (as ``ChangeBatch`` carries them)."""

    map_names: Sequence[str]
    map_index: Sequence[int]
    keys: Sequence[str]
    kinds: Sequence[int]
    values: Sequence[bytes]
    tags: Sequence[str]
    partitions: Sequence[int]
    seqs: Sequence[int]
    millis: Sequence[int] = ()  # record timestamps; empty when no change has a TTL
    ttl_ms: Sequence[int] = ()  # per change, 0 = none; empty when none has one

    def __len__(self) -> int:
        return len(self.keys)

    def expires(self, i: int) -> int | None:
        """When change ``i``'s record expires (epoch millis), or None if it has no TTL."""
        ttl = self.ttl_ms[i] if self.ttl_ms else 0
        return self.millis[i] + ttl if ttl > 0 else None


@dataclass(frozen=True, slots=True)
class ScannedRecords:
    """A page of a map's current records, for a rebuild (``RecordBatch`` columns)."""

    keys: Sequence[str]
    kinds: Sequence[int]  # PUT (live LWW) or OR_ADD (live OR record)
    values: Sequence[bytes]
    tags: Sequence[str]
    millis: Sequence[int] = ()
    ttl_ms: Sequence[int] = ()  # per record, 0 = none; empty when none has one

    def expires(self, i: int) -> int | None:
        ttl = self.ttl_ms[i] if self.ttl_ms else 0
        return self.millis[i] + ttl if ttl > 0 else None


class Scanner(Protocol):
    """Streams every live record of a map from the storage nodes."""

    def scan(self, map_name: str) -> AsyncIterator[ScannedRecords]: ...


UpdateSink = Callable[[list[SearchUpdate]], None]

# A key's change as the indexer keeps it until the commit: the new document, None when removed,
# or an LWW value (msgpack) whose texts are worked out again only if a live search needs them.
Change = ChangedDoc | bytes | None


def changed_docs(idx: MapIndex, changes: dict[str, Change]) -> dict[str, ChangedDoc | None]:
    """The changed documents of a commit, for live searches (an LWW value's texts are the ones its
    upsert indexed: the fields it has kept their targets)."""
    return {
        key: ChangedDoc(idx.texts_for(unpack_value(c)), c) if isinstance(c, bytes) else c
        for key, c in changes.items()
    }


class Indexer:
    def __init__(
        self,
        catalog: IndexCatalog,
        live: LiveSearches,
        store: StateStore,
        *,
        deliver: UpdateSink,
        commit_interval: float = 0.1,
        max_uncommitted: int = 10_000,
        queue_size: int = 64,
        clock: Callable[[], float] = time.monotonic,
        purge_interval: float = PURGE_INTERVAL,
    ) -> None:
        self.catalog = catalog
        self.live = live
        self.store = store
        self.deliver = deliver
        self.commit_interval = commit_interval
        self.max_uncommitted = max_uncommitted
        self.clock = clock
        self.purge_interval = purge_interval
        self._next_purge = clock() + purge_interval
        self.purged = 0  # documents deleted because their record expired
        state = store.load()
        self.positions: dict[int, int] = dict(state.positions)
        self.committed_positions: dict[int, int] = dict(state.positions)
        self.rebuild_queue: list[str] = catalog.restore(state)
        self.scanner: Scanner | None = None
        self._queue: asyncio.Queue[ChangeColumns] = asyncio.Queue(queue_size)
        self._dirty: set[str] = set()
        self._changed: dict[str, dict[str, Change]] = {}
        self._uncommitted = 0
        self._first_uncommitted: float | None = None
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._retry_at = 0.0
        self.commits = 0
        self.rebuilds_done = 0
        self.applied_changes = 0
        self.last_commit_seconds = 0.0

    # -- input ---------------------------------------------------------------------------------

    async def submit(self, batch: ChangeColumns) -> None:
        """Queue a feed batch; waits while the indexer is behind (back-pressure on the feeds)."""
        await self._queue.put(batch)

    def request_rebuild(self, map_name: str) -> None:
        if map_name not in self.rebuild_queue:
            self.rebuild_queue.append(map_name)
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything queued before the call is committed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(fut)
        self._wake.set()
        await fut

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def uncommitted(self) -> int:
        return self._uncommitted

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                await self._step()
        finally:
            for fut in self._flush_waiters:
                if not fut.done():
                    fut.cancel()

    async def _step(self) -> None:
        if self.rebuild_queue and self.scanner is not None and self.clock() >= self._retry_at:
            name = self.rebuild_queue.pop(0)
            try:
                await self._rebuild(name)
            except Exception as e:  # storage unreachable or failing: keep indexing, retry later
                log.warning(
                    "rebuild of map %r failed (%s); retrying in %.0fs", name, e, REBUILD_RETRY
                )
                self.rebuild_queue.append(name)
                self._retry_at = self.clock() + REBUILD_RETRY
            return
        timeout = None
        if self.rebuild_queue and self.scanner is not None:
            timeout = max(0.0, self._retry_at - self.clock())
        if any(idx.has_expiring for idx in self.catalog):
            if self.clock() >= self._next_purge:
                self.purge_expired()
            purge_in = max(0.0, self._next_purge - self.clock())
            timeout = purge_in if timeout is None else min(timeout, purge_in)
        if self._first_uncommitted is not None:
            due_in = max(0.0, self._first_uncommitted + self.commit_interval - self.clock())
            timeout = due_in if timeout is None else min(timeout, due_in)
        if self._flush_waiters:
            timeout = 0.0
        if self._queue.empty() and timeout != 0.0:
            await self._wait_input(timeout)
        # drain what is queued (bounded, so a commit is never postponed for long)
        for _ in range(self._queue.maxsize or 64):
            try:
                batch = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self.apply(batch)
            if self._uncommitted >= self.max_uncommitted:
                break
        due = self._first_uncommitted is not None and (
            self._uncommitted >= self.max_uncommitted
            or self.clock() >= self._first_uncommitted + self.commit_interval
        )
        if due or self._flush_waiters:
            await self.commit()
            waiters, self._flush_waiters = self._flush_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def _wait_input(self, timeout: float | None) -> None:
        self._wake.clear()
        getter = asyncio.ensure_future(self._queue.get())
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {getter, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waker.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            self.apply(getter.result())

    def purge_expired(self) -> None:
        """Delete the documents whose record expired (searches leave them out already); the
        next commit makes it so. Live searches are not told: like live queries, they see an
        expired record leave only when it is written or removed."""
        self._next_purge = self.clock() + self.purge_interval
        for idx in self.catalog:
            n = idx.purge_expired()
            if n:
                self.purged += n
                self._dirty.add(idx.name)
                self._uncommitted += 1
                if self._first_uncommitted is None:
                    self._first_uncommitted = self.clock()

    # -- applying ------------------------------------------------------------------------------

    def apply(self, batch: ChangeColumns) -> None:
        """Apply a feed batch to the index writers (visible after the next commit)."""
        positions = self.positions
        position = positions.get
        keys, kinds, values, map_index = batch.keys, batch.kinds, batch.values, batch.map_index
        partitions, seqs = batch.partitions, batch.seqs
        ttl = bool(batch.ttl_ms)
        # per map of the batch: its index and its changed documents (None: not searchable)
        by_map: dict[int, tuple[MapIndex, dict[str, Change]] | None] = {}
        applied = 0
        for i in range(len(keys)):
            p = partitions[i]
            seq = seqs[i]
            if seq <= position(p, 0):
                continue
            positions[p] = seq
            mi = map_index[i]
            if mi in by_map:
                target = by_map[mi]
            else:
                target = by_map[mi] = self._target(batch.map_names[mi])
            if target is None:
                continue
            idx, changed = target
            key = keys[i]
            kind = kinds[i]
            doc: Change
            if kind == PUT:
                doc = values[i]
                idx.upsert(key, doc, expires=batch.expires(i) if ttl else None)
            elif kind == REMOVE:
                idx.delete(key)
                doc = None
            elif kind == OR_ADD:
                doc = ChangedDoc(
                    idx.or_add(key, batch.tags[i], values[i], expires=batch.expires(i))
                )
            elif kind == OR_REMOVE:
                was_changed, texts_left = idx.or_remove(key, batch.tags[i])
                if not was_changed:
                    continue
                doc = None if texts_left is None else ChangedDoc(texts_left)
            else:
                log.warning("map %r key %r: unknown change kind %r", idx.name, key, kind)
                continue
            applied += 1
            # recorded for every map: a subscription made before the commit must see these
            changed[key] = doc
        for target in by_map.values():
            if target is not None and target[1]:
                target[0].hand_over()  # one burst per batch (see MapIndex.hand_over)
                self._dirty.add(target[0].name)
        if applied:
            self.applied_changes += applied
            self._uncommitted += applied
            if self._first_uncommitted is None:
                self._first_uncommitted = self.clock()
        elif positions != self.committed_positions and self._first_uncommitted is None:
            # only positions moved (changes of maps that are not searchable): save them lazily
            self._first_uncommitted = self.clock()

    def _target(self, map_name: str) -> tuple[MapIndex, dict[str, Change]] | None:
        """Where a batch's changes of a map go: its index and the map's changed documents."""
        idx = self.catalog.open(map_name)
        if idx is None:
            return None
        return idx, self._changed.setdefault(idx.name, {})

    async def commit(self) -> None:
        """Commit every dirty index, then persist positions, then emit live updates."""
        started = self.clock()
        dirty = [idx for name in sorted(self._dirty) if (idx := self.catalog.get(name))]
        changed, self._changed = self._changed, {}
        self._dirty.clear()
        self._uncommitted = 0
        self._first_uncommitted = None
        for idx in dirty:
            await asyncio.to_thread(idx.commit)
        if self.positions != self.committed_positions or dirty:
            self.committed_positions = dict(self.positions)
            self.save_state()
        if dirty:
            self.commits += 1
        self.last_commit_seconds = self.clock() - started
        updates: list[SearchUpdate] = []
        for name, keys in changed.items():
            idx = self.catalog.get(name)
            if idx is not None and self.live.has_map(name):
                updates.extend(self.live.on_commit(idx, changed_docs(idx, keys)))
        if updates:
            self.deliver(updates)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "commit of %d changes in %d maps: %.1f ms, live %.1f ms, %d updates",
                sum(len(k) for k in changed.values()),
                len(dirty),
                self.last_commit_seconds * 1000,
                (self.clock() - started - self.last_commit_seconds) * 1000,
                len(updates),
            )

    def save_state(self) -> None:
        self.store.save(SearchState(self.committed_positions, self.catalog.map_states()))

    # -- rebuilding ----------------------------------------------------------------------------

    async def _rebuild(self, map_name: str) -> None:
        """Replace a map's index with the storage nodes' current records.

        Runs inside the indexer loop, so feed batches wait in the queue meanwhile; applied after
        the scan they may briefly restate older values, but every later change follows them, so
        the commit after them holds the current state.
        """
        assert self.scanner is not None
        if self._uncommitted:
            await self.commit()
        idx = self.catalog.open(map_name)
        if idx is None:
            return
        log.info("rebuilding the index of map %r from a scan", map_name)
        started = self.clock()
        idx.clear()
        or_records: dict[str, dict[str, bytes]] = {}
        or_expires: dict[str, dict[str, int]] = {}
        count = 0
        async for page in self.scanner.scan(map_name):
            for i, key in enumerate(page.keys):
                expires = page.expires(i)
                if page.kinds[i] == OR_ADD:
                    or_records.setdefault(key, {})[page.tags[i]] = page.values[i]
                    if expires is not None:
                        or_expires.setdefault(key, {})[page.tags[i]] = expires
                elif page.kinds[i] == PUT:
                    idx.upsert(key, page.values[i], fresh=True, expires=expires)
                    count += 1
        for key, records in or_records.items():
            idx.or_set(key, records, fresh=True, expires=or_expires.get(key))
            count += 1
        await asyncio.to_thread(idx.commit)
        idx.needs_rebuild = False
        self.rebuilds_done += 1
        self.save_state()
        log.info("rebuilt map %r: %d documents in %.2fs", map_name, count, self.clock() - started)
        updates = self.live.resync(idx)
        if updates:
            self.deliver(updates)
