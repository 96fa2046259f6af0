"""Map handles: the local replica of one map, read at once and written without waiting.

A write is stamped with the client's HLC, applied to the replica, persisted and appended to the
op log in the same call; it reaches the server in the background. ``await handle.flush()`` (or
``await client.wait_acked(op)``) waits for the server's ``OP_ACK``.

Records arriving from the server (events and Merkle sync leaves) are merged with the CRDT rules
through the ``merge_*`` methods, which the sync engine calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from libs.client._oplog import LocalStore
from libs.crdt import HLC, LwwMap, LwwRecord, MerkleTree, OrMap, OrMerkleTree, OrRecord

__all__ = ["ChangeListener", "LwwMapHandle", "OrMapHandle", "WriteOp"]

_BATCH_MERGE_MIN = 256

ChangeListener = Callable[[str, str], None]
"""Called with ``(map name, key)`` after a key's visible state may have changed."""


@dataclass(frozen=True, slots=True)
class WriteOp:
    """A write queued for the server; pass it to ``client.wait_acked``."""

    id: int
    map_name: str
    key: str
    op_type: str


class Engine(Protocol):
    """What a handle needs from its client."""

    hlc: HLC
    store: LocalStore

    def record_op(self, body: dict[str, Any], record_blob: bytes | None) -> WriteOp: ...

    def local_change(self, map_name: str, key: str) -> None: ...

    def remote_change(self, map_name: str, key: str) -> None: ...

    async def wait_acked(self, op: WriteOp | int, timeout: float | None = None) -> str: ...

    def last_op_of(self, map_name: str) -> int: ...


class _Handle:
    kind = ""

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self._engine = engine
        self._write_concern: str | None = None

    def _op(
        self,
        op_type: str,
        key: str,
        ts: dict[str, Any],
        write_concern: str | None,
        blob: bytes | None,
        **fields: Any,
    ) -> WriteOp:
        body: dict[str, Any] = {"mapName": self.name, "opType": op_type, "key": key, **fields}
        body["timestamp"] = ts
        wc = write_concern or self._write_concern
        if wc:
            body["writeConcern"] = wc
        return self._engine.record_op(body, blob)

    async def flush(self, timeout: float | None = 30.0) -> str | None:
        """Wait until every write made so far to this map is acknowledged by the server.

        Returns the achieved write level of the last one (None when nothing was written).
        Raises ``TimeoutError`` if the server has not acknowledged within ``timeout`` seconds.
        """
        last = self._engine.last_op_of(self.name)
        if not last:
            return None
        return await self._engine.wait_acked(last, timeout)

    @property
    def root_hash(self) -> int:
        """The root of this replica's Merkle tree (equal to the server's when in sync)."""
        return int(self.merkle.root)

    @property
    def merkle(self) -> MerkleTree | OrMerkleTree:
        raise NotImplementedError


class LwwMapHandle(_Handle):
    """A last-writer-wins map: one value per key."""

    kind = "lww"

    def __init__(self, engine: Engine, name: str) -> None:
        super().__init__(engine, name)
        self._map = LwwMap(engine.hlc)
        for key, rec in engine.store.load_lww(name):
            self._map.merge(key, LwwRecord.from_wire(rec))

    @property
    def merkle(self) -> MerkleTree:
        return self._map.merkle

    @property
    def crdt(self) -> LwwMap:
        return self._map

    # --- reads ---

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when absent, removed or expired."""
        v = self._map.get(key)
        return default if v is None else v

    def record(self, key: str) -> LwwRecord | None:
        """The stored record of ``key`` (tombstones included)."""
        return self._map.get_record(key)

    def items(self) -> list[tuple[str, Any]]:
        """Every visible ``(key, value)``."""
        return list(self._map.entries().items())

    def keys(self) -> list[str]:
        return list(self._map.entries())

    def values(self) -> list[Any]:
        return list(self._map.entries().values())

    def to_dict(self) -> dict[str, Any]:
        return self._map.entries()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._map.entries())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._map.get(key) is not None

    def __getitem__(self, key: str) -> Any:
        v = self._map.get(key)
        if v is None:
            raise KeyError(key)
        return v

    # --- writes ---

    def set(
        self, key: str, value: Any, *, ttl_ms: int | None = None, write_concern: str | None = None
    ) -> WriteOp:
        """Write ``value`` under ``key`` now; returns the queued op."""
        if value is None:
            raise ValueError("None is the tombstone value; use remove(key)")
        rec = self._map.set(key, value, ttl_ms)
        wire = rec.to_wire()
        blob = self._engine.store.put_lww(self.name, key, wire)
        op = self._op("PUT", key, wire["timestamp"], write_concern, blob, record=wire)
        self._engine.local_change(self.name, key)
        return op

    def remove(self, key: str, *, write_concern: str | None = None) -> WriteOp:
        """Delete ``key`` (a tombstone that wins over older writes)."""
        rec = self._map.remove(key)
        wire = rec.to_wire()
        blob = self._engine.store.put_lww(self.name, key, wire)
        op = self._op("REMOVE", key, wire["timestamp"], write_concern, blob, record=wire)
        self._engine.local_change(self.name, key)
        return op

    # --- merges from the server ---

    def merge_wire(self, key: str, wire: dict[str, Any]) -> bool:
        rec = LwwRecord.from_wire(wire)
        if not self._map.merge(key, rec):
            return False
        self._engine.store.put_lww(self.name, key, rec.to_wire())
        self._engine.remote_change(self.name, key)
        return True

    def merge_many(self, records: Sequence[tuple[str, dict[str, Any]]]) -> int:
        """Merge a batch of server records (sync leaves) at once; returns how many were stored.

        Large batches go through the CRDT map's vectorised merge; for a few records the
        per-record merge is cheaper than setting up the arrays.
        """
        if not records:
            return 0
        store = self._engine.store
        if len(records) < _BATCH_MERGE_MIN:
            merge = self._map.merge
            n = 0
            for key, wire in records:
                if merge(key, LwwRecord.from_wire(wire)):
                    store.put_lww(self.name, key, wire)
                    n += 1
            if n:
                self._engine.remote_change(self.name, records[0][0])
            return n
        keys = [k for k, _ in records]
        ts = [r["timestamp"] for _, r in records]
        changed = self._map.merge_batch(
            keys,
            [t["millis"] for t in ts],
            [t["counter"] for t in ts],
            [t["nodeId"] for t in ts],
            [r.get("value") for _, r in records],
            [r.get("ttlMs") for _, r in records],
        )
        idx = changed.nonzero()[0].tolist()
        for i in idx:
            key, wire = records[i]
            store.put_lww(self.name, key, wire)
        if idx:
            self._engine.remote_change(self.name, records[idx[0]][0])
        return len(idx)

    def reapply(self, body: dict[str, Any]) -> None:
        """Apply a pending op of the op log to the replica again (after a load or a reset)."""
        rec = body.get("record")
        if isinstance(rec, dict):
            self._map.merge(str(body["key"]), LwwRecord.from_wire(rec))

    def clear(self) -> None:
        self._map = LwwMap(self._engine.hlc)


class OrMapHandle(_Handle):
    """An observed-remove map: each key holds a set of values; concurrent adds all survive."""

    kind = "or"

    def __init__(self, engine: Engine, name: str) -> None:
        super().__init__(engine, name)
        self._map = OrMap(engine.hlc)
        self._tomb_key: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        store = self._engine.store
        by_key: dict[str, list[OrRecord]] = {}
        for key, rec in store.load_or(self.name):
            by_key.setdefault(key, []).append(OrRecord.from_wire(rec))
        tombs = store.load_tombstones(self.name)
        for key, recs in by_key.items():
            self._map.merge_key(key, recs, ())
        for tag, key in tombs:
            self._map.apply_tombstone(tag)
            if key:
                self._tomb_key[tag] = key

    @property
    def merkle(self) -> OrMerkleTree:
        return self._map.merkle

    @property
    def crdt(self) -> OrMap:
        return self._map

    # --- reads ---

    def get(self, key: str) -> list[Any]:
        """The values under ``key`` (empty when none)."""
        return self._map.get(key)

    def items(self) -> list[tuple[str, list[Any]]]:
        out = []
        keys = self._map.keys()
        for key in keys:
            vals = self._map.get(key)
            if vals:
                out.append((key, vals))
        return out

    def keys(self) -> list[str]:
        return [k for k, _ in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.items())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self._map.get(key))

    # --- writes ---

    def add(
        self, key: str, value: Any, *, ttl_ms: int | None = None, write_concern: str | None = None
    ) -> WriteOp:
        """Add ``value`` to the set under ``key``."""
        rec = self._map.add(key, value, ttl_ms)
        wire = rec.to_wire()
        blob = self._engine.store.put_or(self.name, key, wire)
        op = self._op("OR_ADD", key, wire["timestamp"], write_concern, blob, orRecord=wire)
        self._engine.local_change(self.name, key)
        return op

    def remove_value(
        self, key: str, value: Any, *, write_concern: str | None = None
    ) -> list[WriteOp]:
        """Remove every occurrence of ``value`` under ``key`` (compared by value)."""
        tags = [r.tag for r in self._map.records(key) if _same_value(r.value, value)]
        return self._remove_tags(key, tags, write_concern)

    def remove(self, key: str, *, write_concern: str | None = None) -> list[WriteOp]:
        """Remove every value under ``key``."""
        return self._remove_tags(key, [r.tag for r in self._map.records(key)], write_concern)

    def _remove_tags(self, key: str, tags: list[str], write_concern: str | None) -> list[WriteOp]:
        if not tags:
            return []
        ts = self._engine.hlc.now()
        ops = []
        for tag in tags:
            self._map.apply_tombstone(tag)
            self._tomb_key[tag] = key
            self._engine.store.remove_or(self.name, key, tag)
            self._engine.store.add_tombstone(self.name, tag, key)
            ops.append(self._op("OR_REMOVE", key, ts.to_wire(), write_concern, None, orTag=tag))
        self._engine.local_change(self.name, key)
        return ops

    # --- merges from the server ---

    def apply_add(self, key: str, wire: dict[str, Any]) -> bool:
        rec = OrRecord.from_wire(wire)
        if not self._map.apply(key, rec):
            return False
        self._engine.store.put_or(self.name, key, rec.to_wire())
        self._engine.remote_change(self.name, key)
        return True

    def apply_remove(self, tag: str, key_hint: str | None = None) -> bool:
        """A remote removal of one tag; True if it removed a value held here."""
        keys = self._map.apply_tombstone(tag)
        store = self._engine.store
        for key in keys:
            store.remove_or(self.name, key, tag)
            self._engine.remote_change(self.name, key)
        key = keys[0] if keys else (key_hint or self._tomb_key.get(tag, ""))
        if key:
            self._tomb_key[tag] = key
        store.add_tombstone(self.name, tag, key)
        return bool(keys)

    def merge_entry(
        self, key: str, records: Iterable[dict[str, Any]], tombstones: Iterable[str]
    ) -> None:
        recs = [OrRecord.from_wire(r) for r in records]
        tombs = list(tombstones)
        before = {r.tag for r in self._map.records(key)}
        self._map.merge_key(key, recs, tombs)
        store = self._engine.store
        for tag in tombs:
            if tag not in self._tomb_key:
                self._tomb_key[tag] = key
                store.add_tombstone(self.name, tag, key)
        after = self._map.records_map(key)
        for tag in before - after.keys():
            store.remove_or(self.name, key, tag)
        for rec in after.values():
            store.put_or(self.name, key, rec.to_wire())
        self._engine.remote_change(self.name, key)

    def entry_for_push(self, key: str) -> dict[str, Any]:
        """``{key, records, tombstones}`` as ``ORMAP_PUSH_DIFF`` carries it: every stored record
        of the key and the tombstones known to belong to it."""
        return {
            "key": key,
            "records": [r.to_wire() for r in self._map.records(key)],
            "tombstones": [t for t, k in self._tomb_key.items() if k == key],
        }

    def reapply(self, body: dict[str, Any]) -> None:
        rec = body.get("orRecord")
        key = str(body["key"])
        if isinstance(rec, dict):
            self._map.apply(key, OrRecord.from_wire(rec))
        tag = body.get("orTag")
        if isinstance(tag, str):
            self._map.apply_tombstone(tag)
            self._tomb_key[tag] = key

    def clear(self) -> None:
        self._map = OrMap(self._engine.hlc)
        self._tomb_key.clear()


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)
