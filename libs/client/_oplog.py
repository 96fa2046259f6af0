"""The client's local store in SQLite: the op log of writes not yet acknowledged by the server,
and the replica of every map the client opened, so that offline writes and synced data survive a
restart.

Writes are buffered in memory and committed together (group commit): the client schedules
:meth:`LocalStore.commit` on the next event-loop turn after a change, so a burst of writes costs
one transaction. A crash can lose at most the writes of the current loop turn; everything
committed is sent after a restart.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack

__all__ = ["LocalStore", "StoreInUse"]


class StoreInUse(sqlite3.OperationalError):
    """The store file is held by another client (one process per store file)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ops (
    id INTEGER PRIMARY KEY, map TEXT NOT NULL, key TEXT NOT NULL, op_type TEXT NOT NULL,
    rec BLOB, extra BLOB
);
CREATE TABLE IF NOT EXISTS lww (
    map TEXT NOT NULL, key TEXT NOT NULL, rec BLOB NOT NULL, PRIMARY KEY (map, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS or_records (
    map TEXT NOT NULL, key TEXT NOT NULL, tag TEXT NOT NULL, rec BLOB NOT NULL,
    PRIMARY KEY (map, key, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS or_tombstones (
    map TEXT NOT NULL, tag TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (map, tag)
) WITHOUT ROWID;
"""


_pack = msgpack.Packer(use_bin_type=True).pack
_EXTRA_FIELDS = ("orTag", "writeConcern", "timeout")


def _unpack(b: bytes) -> Any:
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


class LocalStore:
    """One client's durable state. ``path`` is a file, or ``":memory:"`` for none (then
    nothing is written anywhere and the buffers are simply dropped at each commit).

    Opening a file another client holds fails with ``sqlite3.OperationalError`` after
    ``lock_timeout`` seconds.
    """

    def __init__(self, path: str | Path, lock_timeout: float = 2.0) -> None:
        self.path = str(path)
        self.persistent = self.path != ":memory:"
        self._mem_meta: dict[str, Any] = {}
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=lock_timeout
        )
        try:
            if self.persistent:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                # One client per store file: a second one gets "database is locked".
                self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.executescript(_SCHEMA)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            self._db.close()
            raise StoreInUse(f"{self.path}: {e} (is another client using this store?)") from e
        self._ops: list[tuple[int, str, str, str, bytes | None, bytes | None]] = []
        self._acked_through = 0
        self._dropped: list[int] = []
        self._lww: dict[tuple[str, str], bytes] = {}
        self._or_put: dict[tuple[str, str, str], bytes] = {}
        self._or_del: set[tuple[str, str, str]] = set()
        self._tombs: dict[tuple[str, str], str] = {}
        self._meta: dict[str, Any] = {}
        self._cleared: set[str] = set()
        self.commits = 0

    # --- meta ------------------------------------------------------------------------------------

    def get_meta(self, k: str, default: Any = None) -> Any:
        if k in self._meta:
            return self._meta[k]
        if not self.persistent:
            return self._mem_meta.get(k, default)
        row = self._db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return default if row is None else _unpack(row[0])

    def set_meta(self, k: str, v: Any) -> None:
        self._meta[k] = v

    def node_id(self) -> str:
        """This replica's HLC node id, made once and kept for the life of the store."""
        nid = self.get_meta("node_id")
        if not isinstance(nid, str):
            nid = str(uuid.uuid4())
            self.set_meta("node_id", nid)
            self.commit()
        return nid

    # --- op log ----------------------------------------------------------------------------------

    def max_op_id(self) -> int:
        row = self._db.execute("SELECT MAX(id) FROM ops").fetchone()
        stored = int(row[0]) if row and row[0] is not None else 0
        return max(stored, int(self.get_meta("last_op_id", 0)))

    def pending_ops(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(id, op body as sent in OP_BATCH)`` of every op not yet acknowledged, in order."""
        q = "SELECT id, map, key, op_type, rec, extra FROM ops ORDER BY id"
        for op_id, map_name, key, op_type, rec, extra in self._db.execute(q):
            body: dict[str, Any] = {"mapName": map_name, "opType": op_type, "key": key}
            if rec is not None:
                record = _unpack(rec)
                body["orRecord" if op_type == "OR_ADD" else "record"] = record
                body["timestamp"] = record["timestamp"]
            if extra is not None:
                body.update(_unpack(extra))
            body["id"] = str(op_id)
            yield int(op_id), body

    def append_op(self, op_id: int, body: dict[str, Any], record_blob: bytes | None) -> None:
        """Log an op; ``record_blob`` is its record already packed (shared with the replica row)."""
        self._meta["last_op_id"] = op_id
        if not self.persistent:
            return
        extra: dict[str, Any] = {}
        for field in _EXTRA_FIELDS:
            v = body.get(field)
            if v is not None:
                extra[field] = v
        if record_blob is None:
            extra["timestamp"] = body["timestamp"]
        self._ops.append(
            (
                op_id,
                body["mapName"],
                body["key"],
                body["opType"],
                record_blob,
                _pack(extra) if extra else None,
            )
        )

    def ack_through(self, op_id: int) -> None:
        """Forget every op whose id is at most ``op_id``."""
        if op_id > self._acked_through:
            self._acked_through = op_id

    def drop_op(self, op_id: int) -> None:
        """Forget one op the server refused."""
        self._dropped.append(op_id)

    # --- replicas --------------------------------------------------------------------------------

    def put_lww(self, map_name: str, key: str, record: dict[str, Any]) -> bytes | None:
        """Buffer the replica row of ``key``; returns the packed record (None in memory)."""
        if not self.persistent:
            return None
        blob = self._lww[(map_name, key)] = _pack(record)
        return blob

    def load_lww(self, map_name: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, rec in self._db.execute("SELECT key, rec FROM lww WHERE map = ?", (map_name,)):
            yield key, _unpack(rec)

    def put_or(self, map_name: str, key: str, record: dict[str, Any]) -> bytes | None:
        if not self.persistent:
            return None
        k = (map_name, key, record["tag"])
        self._or_del.discard(k)
        blob = self._or_put[k] = _pack(record)
        return blob

    def remove_or(self, map_name: str, key: str, tag: str) -> None:
        if not self.persistent:
            return
        k = (map_name, key, tag)
        self._or_put.pop(k, None)
        self._or_del.add(k)

    def add_tombstone(self, map_name: str, tag: str, key: str) -> None:
        """Remember that ``tag`` (which lived under ``key``, "" if unknown) is removed."""
        if not self.persistent:
            return
        self._tombs[(map_name, tag)] = key

    def load_or(self, map_name: str) -> Iterator[tuple[str, dict[str, Any]]]:
        q = "SELECT key, rec FROM or_records WHERE map = ?"
        for key, rec in self._db.execute(q, (map_name,)):
            yield key, _unpack(rec)

    def load_tombstones(self, map_name: str) -> list[tuple[str, str]]:
        """``(tag, key)`` of every tombstone of the map."""
        q = "SELECT tag, key FROM or_tombstones WHERE map = ?"
        return [(t, k) for t, k in self._db.execute(q, (map_name,))]

    def clear_map(self, map_name: str) -> None:
        """Drop a map's replica (a server-ordered reset); pending writes to it are kept."""
        self._cleared.add(map_name)
        self._lww = {k: v for k, v in self._lww.items() if k[0] != map_name}
        self._or_put = {k: v for k, v in self._or_put.items() if k[0] != map_name}
        self._or_del = {k for k in self._or_del if k[0] != map_name}
        self._tombs = {k: v for k, v in self._tombs.items() if k[0] != map_name}

    # --- commit ----------------------------------------------------------------------------------

    @property
    def has_new_ops(self) -> bool:
        """Ops appended since the last commit."""
        return bool(self._ops)

    @property
    def dirty(self) -> bool:
        return bool(
            self._ops
            or self._lww
            or self._or_put
            or self._or_del
            or self._tombs
            or self._meta
            or self._cleared
            or self._acked_through
            or self._dropped
        )

    def commit(self) -> None:
        """Write everything buffered in one transaction."""
        if not self.dirty:
            return
        if not self.persistent:
            self._mem_meta.update(self._meta)
            self._clear_buffers()
            return
        db = self._db
        db.execute("BEGIN")
        try:
            for name in self._cleared:
                db.execute("DELETE FROM lww WHERE map = ?", (name,))
                db.execute("DELETE FROM or_records WHERE map = ?", (name,))
                db.execute("DELETE FROM or_tombstones WHERE map = ?", (name,))
            if self._ops:
                db.executemany(
                    "INSERT OR REPLACE INTO ops (id, map, key, op_type, rec, extra) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    self._ops,
                )
            if self._acked_through:
                db.execute("DELETE FROM ops WHERE id <= ?", (self._acked_through,))
            if self._dropped:
                db.executemany("DELETE FROM ops WHERE id = ?", [(i,) for i in self._dropped])
            if self._lww:
                db.executemany(
                    "INSERT OR REPLACE INTO lww (map, key, rec) VALUES (?, ?, ?)",
                    [(m, k, r) for (m, k), r in self._lww.items()],
                )
            if self._or_del:
                db.executemany(
                    "DELETE FROM or_records WHERE map = ? AND key = ? AND tag = ?", self._or_del
                )
            if self._or_put:
                db.executemany(
                    "INSERT OR REPLACE INTO or_records (map, key, tag, rec) VALUES (?, ?, ?, ?)",
                    [(m, k, t, r) for (m, k, t), r in self._or_put.items()],
                )
            if self._tombs:
                db.executemany(
                    "INSERT OR REPLACE INTO or_tombstones (map, tag, key) VALUES (?, ?, ?)",
                    [(m, t, k) for (m, t), k in self._tombs.items()],
                )
            if self._meta:
                db.executemany(
                    "INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)",
                    [(k, _pack(v)) for k, v in self._meta.items()],
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._clear_buffers()

    def _clear_buffers(self) -> None:
        self._ops = []
        self._acked_through = 0
        self._dropped = []
        self._lww = {}
        self._or_put = {}
        self._or_del = set()
        self._tombs = {}
        self._meta = {}
        self._cleared = set()
        self.commits += 1

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._db.close()
