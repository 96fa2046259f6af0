"""The embedded default: one SQLite file per node, WAL mode, synchronous=FULL.

Writes are log-structured, so the group commit costs one row per commit rather than one upsert
per record: ``write`` appends all changes drained since the last commit as one serialized
ChangeBatch to ``log`` and commits (one transaction, one fsync). Once enough changes are logged,
the node hands over snapshots of the (map, partition) pairs that changed, and ``compact`` stores
them in ``snapshots`` and deletes the log they cover, in one transaction. Loading reads the
snapshots, then the remaining log in commit order; replaying it through the CRDT merge is
idempotent, so a snapshot that already holds some logged change is harmless.

Every call runs on one dedicated thread (sqlite3 connections belong to the thread that made
them), so the event loop never blocks on disk and calls never interleave.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from services.storage.backends import (
    CountersChunk,
    LoadChunk,
    LogChunk,
    MapsChunk,
    SnapshotChunk,
    WriteBatch,
)
from services.storage.changes import ChangeSet
from topgun_rpc import storage_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS maps (name TEXT PRIMARY KEY, kind INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, changes INTEGER NOT NULL, batch BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    map TEXT NOT NULL, partition INTEGER NOT NULL, kind INTEGER NOT NULL,
    rows INTEGER NOT NULL, batch BLOB NOT NULL,
    PRIMARY KEY (map, partition)
) WITHOUT ROWID;
"""

DEFAULT_COMPACT_AFTER = 200_000
# A compaction rewrites every changed partition whole, so it waits until the log holds this many
# times the snapshots' rows: each logged change then costs at most 1/LOG_TO_SNAPSHOT_RATIO of a
# rewritten row, for a log (and a replay at start) at most this many times the data.
LOG_TO_SNAPSHOT_RATIO = 2


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: str | Path, *, compact_after: int = DEFAULT_COMPACT_AFTER) -> None:
        self.path = Path(path)
        self.compact_after = compact_after
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._last_id = 0  # id of the last committed log row
        self._logged = 0  # changes in the log
        self._snapshot_rows = 0  # rows held by the snapshots
        self._dirty: set[tuple[str, int]] = set()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("sqlite backend is not open")
        return self._conn

    # --- open / close ---------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        self._conn = conn
        self._last_id = conn.execute("SELECT coalesce(max(id), 0) FROM log").fetchone()[0]
        self._logged = conn.execute("SELECT coalesce(sum(changes), 0) FROM log").fetchone()[0]
        self._snapshot_rows = conn.execute(
            "SELECT coalesce(sum(rows), 0) FROM snapshots"
        ).fetchone()[0]
        log.info("sqlite store %s open", self.path)

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close)
        self._pool.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- load -----------------------------------------------------------------------------------

    async def load(self) -> AsyncIterator[LoadChunk]:
        rows = await self._run(lambda: self.conn.execute("SELECT name, kind FROM maps").fetchall())
        yield MapsChunk([(str(n), int(k)) for n, k in rows])
        cur = await self._run(
            lambda: self.conn.execute("SELECT map, partition, kind, batch FROM snapshots")
        )
        while True:
            snaps = await self._run(cur.fetchmany, 64)
            if not snaps:
                break
            for m, p, k, b in snaps:
                yield SnapshotChunk(str(m), int(k), int(p), bytes(b))
        cur = await self._run(lambda: self.conn.execute("SELECT batch FROM log ORDER BY id"))
        while True:
            logged = await self._run(cur.fetchmany, 64)
            if not logged:
                break
            for (b,) in logged:
                data = bytes(b)
                self._mark_dirty_from_log(data)
                yield LogChunk(data)
        rows = await self._run(
            lambda: self.conn.execute("SELECT name, state FROM counters").fetchall()
        )
        yield CountersChunk([(str(n), bytes(s)) for n, s in rows])

    def _mark_dirty_from_log(self, data: bytes) -> None:
        """Changes still only in the log must be in the next compaction's snapshots."""
        ops = storage_pb2.ChangeBatch.FromString(data).ops
        names = list(ops.map_names)
        self._dirty.update(
            (names[mi], p) for mi, p in set(zip(ops.map_index, ops.partitions, strict=True))
        )

    # --- write ----------------------------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        for cs in batch.changes:
            names = cs.map_names
            self._dirty.update(
                (names[mi], p) for mi, p in set(zip(cs.map_index, cs.partitions, strict=True))
            )
        self._last_id, n = await self._run(self._write, batch)
        self._logged += n

    def _write(self, batch: WriteBatch) -> tuple[int, int]:
        conn = self.conn
        changes = ChangeSet.concat(batch.changes) if batch.changes else None
        blob = b""
        if changes is not None and len(changes):
            blob = storage_pb2.ChangeBatch(
                ops=changes.op_batch(), seqs=changes.seqs
            ).SerializeToString()
        last_id = self._last_id
        conn.execute("BEGIN")
        try:
            if batch.maps:
                conn.executemany("INSERT OR IGNORE INTO maps VALUES (?, ?)", batch.maps)
            if blob and changes is not None:
                last_id += 1
                conn.execute("INSERT INTO log VALUES (?, ?, ?)", (last_id, len(changes), blob))
            if batch.counters:
                conn.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)", batch.counters)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return last_id, (len(changes) if changes is not None else 0)

    # --- compaction -----------------------------------------------------------------------------

    def compaction_due(self) -> bool:
        return self._logged >= max(self.compact_after, LOG_TO_SNAPSHOT_RATIO * self._snapshot_rows)

    def begin_compaction(self) -> tuple[int, set[tuple[str, int]]]:
        dirty, self._dirty = self._dirty, set()
        return self._last_id, dirty

    def abort_compaction(self, dirty: set[tuple[str, int]]) -> None:
        self._dirty |= dirty

    async def compact(
        self, snapshots: Sequence[tuple[str, int, int, int, bytes]], upto: int
    ) -> None:
        logged, held = await self._run(self._compact, list(snapshots), upto)
        self._logged = logged
        self._snapshot_rows = held

    def _compact(self, rows: list[tuple[str, int, int, int, bytes]], upto: int) -> tuple[int, int]:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            conn.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("DELETE FROM log WHERE id <= ?", (upto,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logged = conn.execute("SELECT coalesce(sum(changes), 0) FROM log").fetchone()[0]
        held = conn.execute("SELECT coalesce(sum(rows), 0) FROM snapshots").fetchone()[0]
        return int(logged), int(held)
