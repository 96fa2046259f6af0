"""Last-write-wins map (``packages/core/src/LWWMap.ts``; CRDT.md section 5).

A record is a value with the timestamp of the write that made it; a tombstone is a record whose
value is ``None`` and takes part in merges like any write. A remote record replaces the local one
only with a strictly greater timestamp, so merges commute, associate and are idempotent. The map
keeps its Merkle tree (``map.merkle``) up to date on every accepted change.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from libs.crdt.collation import node_id_after
from libs.crdt.hashing import fnv1a_many
from libs.crdt.hlc import HLC, Timestamp, compare_timestamps, timestamp_after
from libs.crdt.merkle import MerkleTree, lww_item_hashes

__all__ = ["LwwMap", "LwwRecord", "values_equal"]

_tuple_new = tuple.__new__


class LwwRecord(NamedTuple):
    """A value (``None`` for a tombstone) with its write timestamp and optional TTL (immutable;
    a named tuple because the merge path builds one per op)."""

    value: Any
    timestamp: Timestamp
    ttl_ms: int | float | None = None

    @property
    def is_tombstone(self) -> bool:
        return self.value is None

    def expired(self, now: int) -> bool:
        """TopGun's TTL rule: hidden once ``millis + ttlMs < now`` (still visible at equality)."""
        return bool(self.ttl_ms) and self.timestamp.millis + self.ttl_ms < now  # type: ignore[operator]

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "timestamp": self.timestamp.to_wire()}
        if self.ttl_ms is not None:
            out["ttlMs"] = self.ttl_ms
        return out

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> LwwRecord:
        """A record from a decoded frame (``{value, timestamp, ttlMs?}``); raises ``ValueError``
        naming a bad field. A missing or ``null`` ttlMs means no TTL."""
        if not isinstance(m, Mapping):
            raise ValueError(f"record must be a map, got {type(m).__name__}")
        if "timestamp" not in m:
            raise ValueError("record.timestamp is missing")
        ts = Timestamp.from_wire(m["timestamp"])
        ttl = m.get("ttlMs")
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
                raise ValueError(f"record.ttlMs must be a finite number, got {ttl!r}")
            if type(ttl) is float and ttl.is_integer():
                ttl = int(ttl)
        return cls(m.get("value"), ts, ttl)


def values_equal(a: Any, b: Any, depth: int = 0) -> bool:
    """Structural equality of decoded values (``valuesEqual`` in LWWMap.ts): key order does not
    matter, ``1 == 1.0``, booleans are not numbers, over-deep values are unequal."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return False  # `a is b` already covered equal booleans
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if depth > 64:
        return False
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        if not isinstance(a, list | tuple) or not isinstance(b, list | tuple) or len(a) != len(b):
            return False
        return all(values_equal(x, y, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if len(a) != len(b):
            return False
        return all(k in b and values_equal(v, b[k], depth + 1) for k, v in a.items())
    return type(a) is type(b) and bool(a == b)


def _check_ttl(ttl_ms: int | float | None) -> None:
    if ttl_ms is None:
        return
    if (
        isinstance(ttl_ms, bool)
        or not isinstance(ttl_ms, int | float)
        or not math.isfinite(ttl_ms)
        or ttl_ms <= 0
    ):
        raise ValueError("TTL must be a positive finite number")


def _as_list(col: Sequence[Any] | npt.NDArray[Any]) -> list[Any]:
    return col.tolist() if isinstance(col, np.ndarray) else list(col)


class LwwMap:
    """An LWW map replica. ``hlc`` stamps local writes and supplies the wall clock for TTLs."""

    __slots__ = ("_data", "_hlc", "merkle")

    def __init__(self, hlc: HLC) -> None:
        self._hlc = hlc
        self._data: dict[str, LwwRecord] = {}
        self.merkle = MerkleTree()

    @property
    def hlc(self) -> HLC:
        return self._hlc

    # --- local writes ---

    def set(self, key: str, value: Any, ttl_ms: int | float | None = None) -> LwwRecord:
        """Write ``value`` under a new local timestamp; returns the stored record."""
        _check_ttl(ttl_ms)
        record = LwwRecord(value, self._hlc.now(), ttl_ms)
        self._data[key] = record
        self.merkle.update(key, record.timestamp)
        return record

    def remove(self, key: str) -> LwwRecord:
        """Write a tombstone under a new local timestamp."""
        record = LwwRecord(None, self._hlc.now())
        self._data[key] = record
        self.merkle.update(key, record.timestamp)
        return record

    # --- remote records ---

    def merge(self, key: str, record: LwwRecord) -> bool:
        """Merge a remote record. The clock always observes its timestamp first (and in strict
        mode may raise ``ClockDriftError``); the record replaces the local one if there is none
        or its timestamp is strictly greater. Returns whether it was stored."""
        self._hlc.update(record.timestamp)
        local = self._data.get(key)
        if local is None or timestamp_after(record.timestamp, local.timestamp):
            self._data[key] = record
            self.merkle.update(key, record.timestamp)
            return True
        return False

    def merge_batch(
        self,
        keys: Sequence[str],
        millis: Sequence[int] | npt.NDArray[Any],
        counters: Sequence[int] | npt.NDArray[Any],
        node_ids: Sequence[str],
        values: Sequence[Any],
        ttl_ms: Sequence[int | float | None] | npt.NDArray[Any] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Merge many remote records given as columns (``None`` value = tombstone; a TTL of
        ``None`` or 0 = none). Returns per record whether it was stored.

        Equal to merging them one by one in order, except for the clock: it observes the
        newest timestamp of the batch once (its state stays ahead of every record, but its
        counter is not bumped per record). In strict mode a drifting record raises
        ``ClockDriftError`` before anything is stored. Hashing and Merkle updates are done for
        the whole batch with numpy.
        """
        n = len(keys)
        changed = np.zeros(n, dtype=bool)
        if n == 0:
            return changed
        ms = _as_list(millis)
        cs = _as_list(counters)
        ns = node_ids if isinstance(node_ids, list) else list(node_ids)
        ttls = [None] * n if ttl_ms is None else [t or None for t in _as_list(ttl_ms)]
        if not (len(ms) == len(cs) == len(ns) == len(values) == len(ttls) == n):
            raise ValueError("merge_batch columns must all have the same length")
        self._hlc.update(Timestamp(*max(zip(ms, cs, ns, strict=True))))

        data = self._data
        get = data.get
        won: list[int] = []
        for i, (key, m, c, nid, value, ttl) in enumerate(
            zip(keys, ms, cs, ns, values, ttls, strict=True)
        ):
            ts = _tuple_new(Timestamp, (m, c, nid))
            local = get(key)
            if local is None or (
                ts > lt  # millis or counter decide: the tuple order is TopGun's
                if ts[0] != (lt := local[1])[0] or ts[1] != lt[1]
                else node_id_after(ts[2], lt[2])
            ):
                data[key] = _tuple_new(LwwRecord, (value, ts, ttl))
                won.append(i)
        if won:
            changed[won] = True
            # Winners in batch order; a key that won twice is set twice, the later one last.
            wkeys = [keys[i] for i in won]
            item_hashes = lww_item_hashes(
                wkeys, [ms[i] for i in won], [cs[i] for i in won], [ns[i] for i in won]
            )
            self.merkle.set_entries(wkeys, item_hashes, fnv1a_many(wkeys))
        return changed

    def adopt_server_echo(self, key: str, server_record: LwwRecord) -> bool:
        """Adopt a server's re-stamp of a local write that ``merge`` rejected: only if the local
        value is structurally equal and the server timestamp is not newer. Returns whether the
        server record is now stored (so the Merkle tree matches the server's)."""
        local = self._data.get(key)
        if local is None or not values_equal(local.value, server_record.value):
            return False
        if timestamp_after(server_record.timestamp, local.timestamp):
            return False
        self._data[key] = server_record
        self.merkle.update(key, server_record.timestamp)
        return True

    def prune(self, older_than: Timestamp) -> list[str]:
        """Delete tombstones strictly older than ``older_than`` (and their Merkle entries);
        live records are never pruned. Returns the pruned keys."""
        pruned = [
            k
            for k, r in self._data.items()
            if r.value is None and compare_timestamps(r.timestamp, older_than) < 0
        ]
        for k in pruned:
            del self._data[k]
            self.merkle.remove(k)
        return pruned

    # --- reading ---

    def get(self, key: str, now: int | None = None) -> Any:
        """The visible value of ``key``, or ``None`` when it is missing, a tombstone or expired
        at ``now`` (default: the HLC's wall clock)."""
        r = self._data.get(key)
        if r is None or r.value is None:
            return None
        if r.ttl_ms and r.expired(self._hlc.wall() if now is None else now):
            return None
        return r.value

    def get_record(self, key: str) -> LwwRecord | None:
        """The stored record of ``key`` (tombstones and expired records included)."""
        return self._data.get(key)

    def entries(self, now: int | None = None) -> dict[str, Any]:
        """Key -> value of every visible record, in insertion order."""
        t = self._hlc.wall() if now is None else now
        return {
            k: r.value
            for k, r in self._data.items()
            if r.value is not None and not (r.ttl_ms and r.expired(t))
        }

    def records(self) -> dict[str, LwwRecord]:
        """Every stored record, tombstones included (a copy)."""
        return dict(self._data)

    def keys(self) -> list[str]:
        """Every stored key, tombstones included."""
        return list(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data
