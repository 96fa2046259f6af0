"""Observed-remove multimap (``packages/core/src/ORMap.ts``; CRDT.md section 6).

Each key holds tag -> record; a tag is the string form of the timestamp of the add that created
it, so it is globally unique. Removing tombstones tags (one set for the whole map); a tombstoned
tag never comes back. Merges are unions: of tombstones, then of records not tombstoned.

Two choices differ from the TypeScript class where it is not convergent, and agree with it
everywhere else (every vector): a record whose tag becomes tombstoned is dropped at once under
every key that holds it (TopGun drops it only under the key at hand, and elsewhere at the next
full merge), and a tag applied under a second key is kept under both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from libs.crdt.hlc import HLC, Timestamp, compare_timestamps, timestamp_after
from libs.crdt.merkle import OrMerkleTree
from libs.crdt.or_entry import hash_or_entry, hash_or_record, or_entry_string

__all__ = [
    "OrMap",
    "OrRecord",
    "hash_or_entry",
    "hash_or_record",
    "or_entry_string",
]


def _wire_ttl(m: Mapping[str, Any]) -> tuple[int | float | None, bool]:
    if "ttlMs" not in m:
        return None, False
    v = m["ttlMs"]
    if v is None:
        return None, True
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"ttlMs must be a finite number or null, got {v!r}")
    if type(v) is float and v.is_integer():
        v = int(v)
    return v, False


class OrRecord(NamedTuple):
    """One added value under one tag (immutable). ``ttl_null`` marks a record that carried
    ``ttlMs: null`` on the wire (a TopGun Rust server writes that); it is hashed as
    ``:ttl=null``."""

    value: Any
    timestamp: Timestamp
    tag: str
    ttl_ms: int | float | None = None
    ttl_null: bool = False

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": self.value,
            "timestamp": self.timestamp.to_wire(),
            "tag": self.tag,
        }
        if self.ttl_ms is not None:
            out["ttlMs"] = self.ttl_ms
        elif self.ttl_null:
            out["ttlMs"] = None
        return out

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> OrRecord:
        """An OR record from a decoded frame; raises ``ValueError`` naming a bad field."""
        if not isinstance(m, Mapping):
            raise ValueError(f"OR record must be a map, got {type(m).__name__}")
        if "timestamp" not in m:
            raise ValueError("OR record.timestamp is missing")
        ts = Timestamp.from_wire(m["timestamp"])
        tag = m.get("tag")
        if not isinstance(tag, str):
            raise ValueError("OR record.tag must be a string")
        ttl, ttl_null = _wire_ttl(m)
        return cls(m.get("value"), ts, tag, ttl, ttl_null)

    def expired(self, now: int) -> bool:
        """TopGun's TTL rule: hidden once ``millis + ttlMs < now`` (still visible at equality)."""
        return bool(self.ttl_ms) and self.timestamp.millis + self.ttl_ms < now  # type: ignore[operator]


def _strict_equal(a: Any, b: Any) -> bool:
    """JavaScript ``===`` on decoded values: primitives by value (``1 === 1.0``, ``NaN`` never
    equal, booleans are not numbers), objects and arrays by identity."""
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _check_ttl(ttl_ms: int | float | None) -> None:
    if ttl_ms is None:
        return
    if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int | float):
        raise ValueError("TTL must be a positive finite number")
    if not math.isfinite(ttl_ms) or ttl_ms <= 0:
        raise ValueError("TTL must be a positive finite number")


class OrMap:
    """An OR map replica with its Merkle tree (``map.merkle``) kept up to date."""

    __slots__ = ("_hlc", "_items", "_tag_key", "_tag_more", "_tombstones", "merkle")

    def __init__(self, hlc: HLC) -> None:
        self._hlc = hlc
        self._items: dict[str, dict[str, OrRecord]] = {}
        self._tombstones: dict[str, None] = {}  # an ordered set
        self._tag_key: dict[str, str] = {}  # stored tag -> the key holding it
        self._tag_more: dict[str, list[str]] = {}  # stored tag -> further keys (rare)
        self.merkle = OrMerkleTree()

    @property
    def hlc(self) -> HLC:
        return self._hlc

    # --- local operations ---

    def add(self, key: str, value: Any, ttl_ms: int | float | None = None) -> OrRecord:
        """Add ``value`` under a new tag (the new timestamp's string form)."""
        _check_ttl(ttl_ms)
        ts = self._hlc.now()
        record = OrRecord(value, ts, str(ts), ttl_ms)
        self._put(key, record)
        self._refresh(key)
        return record

    def remove(self, key: str, value: Any) -> list[str]:
        """Tombstone every tag of ``key`` whose value is ``===`` ``value`` (objects by identity,
        as in JavaScript); returns those tags."""
        recs = self._items.get(key)
        if not recs:
            return []
        tags = [tag for tag, r in recs.items() if _strict_equal(r.value, value)]
        affected: dict[str, None] = {}
        for tag in tags:
            self._tombstones[tag] = None
            affected.update(dict.fromkeys(self._drop_tag(tag)))
        for k in affected:
            self._refresh(k)
        return tags

    # --- reading ---

    def _now(self, now: int | None) -> int:
        return self._hlc.wall() if now is None else now

    def get(self, key: str, now: int | None = None) -> list[Any]:
        """Visible values of ``key``: not expired at ``now`` (default: the HLC's wall clock),
        in insertion order."""
        recs = self._items.get(key)
        if not recs:
            return []
        t = self._now(now)
        return [r.value for r in recs.values() if not r.expired(t)]

    def live_records(self, key: str, now: int | None = None) -> list[OrRecord]:
        """Records of ``key`` that ``get`` would show (``getRecords``)."""
        recs = self._items.get(key)
        if not recs:
            return []
        t = self._now(now)
        return [r for r in recs.values() if not r.expired(t)]

    def records(self, key: str) -> list[OrRecord]:
        """Every stored record of ``key``, expired ones included (what sync sends)."""
        return list(self._items.get(key, {}).values())

    def records_map(self, key: str) -> dict[str, OrRecord]:
        """Tag -> record of ``key`` (a copy)."""
        return dict(self._items.get(key, {}))

    def all_records(self) -> dict[str, dict[str, OrRecord]]:
        """Key -> tag -> record for every stored key (copies)."""
        return {k: dict(v) for k, v in self._items.items()}

    @property
    def tombstones(self) -> list[str]:
        """All tombstoned tags, in the order they were added."""
        return list(self._tombstones)

    def is_tombstoned(self, tag: str) -> bool:
        return tag in self._tombstones

    def keys(self) -> list[str]:
        """Keys holding at least one record."""
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    # --- remote operations ---

    def apply(self, key: str, record: OrRecord) -> bool:
        """A remote add (``SERVER_EVENT OR_ADD``, ``OR_ADD`` op). False if its tag is tombstoned;
        otherwise store (or overwrite) it, advance the clock and return True."""
        if record.tag in self._tombstones:
            return False
        self._put(key, record)
        self._hlc.update(record.timestamp)
        self._refresh(key)
        return True

    def apply_batch(self, keys: Sequence[str], records: Sequence[OrRecord]) -> list[bool]:
        """``apply`` for many remote adds; returns per record whether it was stored.

        Equal to applying them one by one, except for the clock, which observes the newest
        timestamp of the batch once (before anything is stored, so strict mode raises
        ``ClockDriftError`` with nothing applied).
        """
        if len(keys) != len(records):
            raise ValueError("apply_batch needs one record per key")
        if not records:
            return []
        self._hlc.update(max(r.timestamp for r in records))
        tomb = self._tombstones
        out: list[bool] = []
        touched: dict[str, None] = {}
        put = self._put
        for key, rec in zip(keys, records, strict=True):
            if rec.tag in tomb:
                out.append(False)
                continue
            put(key, rec)
            touched[key] = None
            out.append(True)
        for key in touched:
            self._refresh(key)
        return out

    def apply_tombstone(self, tag: str) -> list[str]:
        """A remote remove of one tag; returns the keys it was removed from."""
        self._tombstones[tag] = None
        keys = self._drop_tag(tag)
        for k in keys:
            self._refresh(k)
        return keys

    def merge(self, other: OrMap) -> None:
        """Merge another replica's full state: union of tombstones, then the other map's records
        that are not tombstoned and whose tag is unknown under their key (no overwrite). The
        clock observes every such record."""
        tomb = self._tombstones
        changed: dict[str, None] = {}
        for t in other._tombstones:
            if t not in tomb:
                tomb[t] = None
                changed.update(dict.fromkeys(self._drop_tag(t)))
        update = self._hlc.update
        for key, recs in other._items.items():
            local = self._items.get(key)
            for tag, rec in recs.items():
                if tag in tomb:
                    continue
                if local is None or tag not in local:
                    self._put(key, rec)
                    local = self._items[key]
                    changed[key] = None
                update(rec.timestamp)
        for key in changed:
            self._refresh(key)

    def merge_key(
        self, key: str, records: Iterable[OrRecord], tombstones: Iterable[str] = ()
    ) -> tuple[int, int]:
        """Merge one key from a sync leaf or diff response; returns ``(added, updated)``.

        Remote tombstones are added first (dropping the records they name); then an unknown tag
        is added and a known tag replaced only by a strictly newer timestamp. The clock observes
        every record that is not tombstoned.
        """
        tomb = self._tombstones
        affected: dict[str, None] = {key: None}
        for t in tombstones:
            if t not in tomb:
                tomb[t] = None
                affected.update(dict.fromkeys(self._drop_tag(t)))
        added = updated = 0
        for rec in records:
            if rec.tag in tomb:
                continue
            local = self._items.get(key)
            mine = None if local is None else local.get(rec.tag)
            if mine is None:
                self._put(key, rec)
                added += 1
            elif timestamp_after(rec.timestamp, mine.timestamp):
                self._put(key, rec)
                updated += 1
            self._hlc.update(rec.timestamp)
        for k in affected:
            self._refresh(k)
        return added, updated

    def prune(self, older_than: Timestamp) -> list[str]:
        """Drop tombstones whose tag parses to a timestamp strictly older than ``older_than``;
        tags that do not parse are kept. Returns the dropped tags."""
        dropped = []
        for tag in self._tombstones:
            try:
                ts = Timestamp.parse(tag)
            except ValueError:
                continue
            if compare_timestamps(ts, older_than) < 0:
                dropped.append(tag)
        for tag in dropped:
            del self._tombstones[tag]
        return dropped

    # --- internals ---

    def _put(self, key: str, record: OrRecord) -> None:
        tag = record.tag
        recs = self._items.get(key)
        if recs is None:
            recs = self._items[key] = {}
        recs[tag] = record
        first = self._tag_key.setdefault(tag, key)
        if first != key:
            more = self._tag_more.setdefault(tag, [])
            if key not in more:
                more.append(key)

    def _drop_tag(self, tag: str) -> list[str]:
        """Delete every stored record with ``tag``; returns the keys it was under."""
        first = self._tag_key.pop(tag, None)
        if first is None:
            return []
        keys = [first, *self._tag_more.pop(tag, ())]
        items = self._items
        for k in keys:
            recs = items[k]
            del recs[tag]
            if not recs:
                del items[k]
        return keys

    def _refresh(self, key: str) -> None:
        recs = self._items.get(key)
        if recs:
            self.merkle.set_text(key, or_entry_string(key, recs))
        else:
            self.merkle.remove(key)
