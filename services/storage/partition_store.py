"""A storage node's in-memory state: per map, per partition, the records, the Merkle leaf sums,
and one change sequence per partition (shared by the node's maps).

The write side is ``merge.py`` (batch merge) and ``load_*`` here (rebuild from the durable
store). The read side is a small documented API that other parts of the node (scans, the change
feed, replication catch-up, query fragments) use without touching the dicts directly:

- ``map_kind(name)``, ``map_names()``
- ``iter_records(map_name, partitions, include_tombstones=False, now_ms=None)`` yields
  ``(partition, key, tag, record)``: LWW records (tag ``""``; ``record.value`` is msgpack bytes,
  ``b""`` for a tombstone) or OR adds (tag set) and, with ``include_tombstones``, OR tombstones
  (``OrTombstone``, no value). Every record has ``millis``, ``counter``, ``node_id``, ``seq``.
  Each partition is snapshotted before it is yielded, so a consumer may await between items.
- ``get(map_name, keys)``, ``leaf_sums(map_name, partitions)``,
  ``bucket_rows(map_name, paths, partitions)``, ``changes_since(...)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from libs.crdt.hashing import PARTITION_COUNT, fnv1a, fnv1a_many, mix, mix_many
from libs.crdt.jsvalues import sort_keys_utf16
from libs.crdt.merkle import LEAF_COUNT, lww_item_hashes
from libs.crdt.or_entry import or_record_string
from services.storage.changes import ChangeSet
from services.storage.leaf_matrix import LeafMatrix
from services.storage.records import LwwRecord, OrEntry, OrHashView, OrRecord, OrTombstone
from topgun_rpc import common_pb2, storage_pb2

MAP_KIND_UNKNOWN = int(storage_pb2.MAP_KIND_UNKNOWN)
MAP_KIND_LWW = int(storage_pb2.MAP_KIND_LWW)
MAP_KIND_OR = int(storage_pb2.MAP_KIND_OR)
PUT, REMOVE, OR_ADD, OR_REMOVE = (
    int(common_pb2.PUT),
    int(common_pb2.REMOVE),
    int(common_pb2.OR_ADD),
    int(common_pb2.OR_REMOVE),
)
_MASK = 0xFFFFFFFF

Row = tuple[int, str, str, Any]  # (partition, key, tag, LwwRecord | OrRecord | OrTombstone)


class MapState:
    """One map on this node: its kind, a dict per partition, its leaf sums, and (built on the
    first bucket request, then kept up to date) an index from leaf slot to keys."""

    __slots__ = ("bucket_index", "kind", "leaves", "name", "parts")

    def __init__(self, name: str, kind: int) -> None:
        self.name = name
        self.kind = kind
        self.parts: list[dict[str, Any] | None] = [None] * PARTITION_COUNT
        self.leaves = LeafMatrix()
        self.bucket_index: list[set[str]] | None = None

    def part(self, partition: int) -> dict[str, Any]:
        d = self.parts[partition]
        if d is None:
            d = self.parts[partition] = {}
        return d

    def index_new_keys(self, keys: Sequence[str], slots: Sequence[int]) -> None:
        index = self.bucket_index
        if index is not None:
            for k, s in zip(keys, slots, strict=True):
                index[s].add(k)

    def build_bucket_index(self) -> list[set[str]]:
        if self.bucket_index is None:
            index: list[set[str]] = [set() for _ in range(LEAF_COUNT)]
            keys = [k for d in self.parts if d for k in d]
            if keys:
                for k, s in zip(keys, (fnv1a_many(keys) >> np.uint32(20)).tolist(), strict=True):
                    index[s].add(k)
            self.bucket_index = index
        return self.bucket_index


def decode_value(value: bytes) -> Any:
    return msgpack.unpackb(value, raw=False, strict_map_key=False)


def or_part(tag: str, rec: OrRecord, decoded: Any) -> str:
    """The text of one OR add in its key's entry hash (CRDT.md 8.2)."""
    return or_record_string(OrHashView(tag, decoded, rec), tag)


def or_entry_hash(key: str, entry: OrEntry) -> int:
    """``hash_or_entry`` of a key's live adds (0 when there are none), from the parts cached on
    the records, so values are decoded once per add rather than on every change of the key."""
    if not entry.records:
        return 0
    recs = entry.records
    return fnv1a("|".join([f"key:{key}", *(recs[t].part for t in sort_keys_utf16(recs))]))


class PartitionStore:
    """Every map this node holds, for the partitions it holds (primaries and backups)."""

    def __init__(self) -> None:
        self.maps: dict[str, MapState] = {}
        self.seqs: list[int] = [0] * PARTITION_COUNT
        self._node_ids: dict[str, str] = {}

    # --- maps ---------------------------------------------------------------------------------

    def map_kind(self, name: str) -> int:
        m = self.maps.get(name)
        return m.kind if m else MAP_KIND_UNKNOWN

    def map_names(self) -> list[str]:
        return list(self.maps)

    def create_map(self, name: str, kind: int) -> MapState:
        m = self.maps.get(name)
        if m is None:
            m = self.maps[name] = MapState(name, kind)
        return m

    def intern_node_ids(self, node_ids: Iterable[str]) -> dict[str, str]:
        """One shared string object per distinct node id (millions of records, few writers)."""
        table = self._node_ids
        return {n: table.setdefault(n, n) for n in set(node_ids)}

    # --- reads --------------------------------------------------------------------------------

    def iter_records(
        self,
        map_name: str,
        partitions: Iterable[int],
        *,
        include_tombstones: bool = False,
        now_ms: int | None = None,
    ) -> Iterator[Row]:
        """``(partition, key, tag, record)`` of a map over ``partitions``; see the module doc.
        With ``now_ms``, records whose TTL expired (``millis + ttl_ms < now_ms``) are left out."""
        m = self.maps.get(map_name)
        if m is None:
            return
        is_or = m.kind == MAP_KIND_OR
        for p in partitions:
            d = m.parts[p]
            if not d:
                continue
            items = list(d.items())
            if not is_or:
                for key, rec in items:
                    if not rec.value and not include_tombstones:
                        continue
                    if now_ms is not None and rec.ttl_ms and rec.millis + rec.ttl_ms < now_ms:
                        continue
                    yield p, key, "", rec
                continue
            for key, entry in items:
                for tag, orec in list(entry.records.items()):
                    if now_ms is not None and orec.ttl_ms and orec.millis + orec.ttl_ms < now_ms:
                        continue
                    yield p, key, tag, orec
                if include_tombstones:
                    for tag, tomb in list(entry.tombstones.items()):
                        yield p, key, tag, tomb

    def get(self, map_name: str, keys: Sequence[str], partitions: Sequence[int]) -> list[Row]:
        """Every stored row of ``keys`` (``partitions[i]`` is key i's), tombstones included."""
        m = self.maps.get(map_name)
        out: list[Row] = []
        if m is None:
            return out
        for key, p in zip(keys, partitions, strict=True):
            d = m.parts[p]
            if not d:
                continue
            v = d.get(key)
            if v is None:
                continue
            if m.kind == MAP_KIND_LWW:
                out.append((p, key, "", v))
            else:
                out.extend((p, key, t, r) for t, r in v.records.items())
                out.extend((p, key, t, r) for t, r in v.tombstones.items())
        return out

    def leaf_sums(
        self, map_name: str, partitions: Collection[int]
    ) -> tuple[npt.NDArray[np.uint32], int, int]:
        """``(sums, kind, item_count)`` of a map over ``partitions``."""
        m = self.maps.get(map_name)
        if m is None:
            return np.zeros(LEAF_COUNT, dtype=np.uint32), MAP_KIND_UNKNOWN, 0
        count = 0
        for p in partitions:
            d = m.parts[p]
            if d:
                if m.kind == MAP_KIND_LWW:
                    count += len(d)
                else:
                    count += sum(1 for e in d.values() if e.records)
        return m.leaves.total(partitions), m.kind, count

    def record_count(self, map_name: str, partitions: Collection[int]) -> int:
        """Live records (LWW values that are not tombstones, OR adds) over ``partitions``."""
        m = self.maps.get(map_name)
        if m is None:
            return 0
        n = 0
        for p in partitions:
            d = m.parts[p]
            if not d:
                continue
            if m.kind == MAP_KIND_LWW:
                n += sum(1 for r in d.values() if r.value)
            else:
                n += sum(len(e.records) for e in d.values())
        return n

    def bucket_rows(
        self, map_name: str, paths: Iterable[str], partitions: Collection[int]
    ) -> list[Row]:
        """Every row (tombstones included) whose key hash starts with one of ``paths``
        (hex prefixes of up to 3 digits), on ``partitions``."""
        m = self.maps.get(map_name)
        if m is None:
            return []
        slots: set[int] = set()
        for path in paths:
            slots.update(slots_of_path(path))
        index = m.build_bucket_index()
        keys = [k for s in sorted(slots) for k in index[s]]
        if not keys:
            return []
        parts = (fnv1a_many(keys) % np.uint32(PARTITION_COUNT)).tolist()
        wanted = set(partitions)
        sel = [(k, p) for k, p in zip(keys, parts, strict=True) if p in wanted]
        return self.get(map_name, [k for k, _ in sel], [p for _, p in sel])

    def changes_since(
        self,
        map_names: Collection[str] | None,
        partitions: Iterable[int],
        from_seq: Mapping[int, int],
    ) -> ChangeSet:
        """The current state of every row changed after ``from_seq[p]`` (0 when absent), in
        sequence order per partition. This is the change feed's catch-up and replication's
        resync: the store is the log, newest state per key."""
        names = [n for n in self.maps if map_names is None or n in map_names]
        out = ChangeSet(names)
        rows: list[tuple[int, int, int, str, str, Any]] = []
        for p in partitions:
            after = from_seq.get(p, 0)
            if after >= self.seqs[p]:
                continue
            for mi, name in enumerate(names):
                m = self.maps[name]
                d = m.parts[p]
                if not d:
                    continue
                if m.kind == MAP_KIND_LWW:
                    rows.extend((p, r.seq, mi, k, "", r) for k, r in d.items() if r.seq > after)
                else:
                    for k, e in d.items():
                        rows.extend(
                            (p, r.seq, mi, k, t, r) for t, r in e.records.items() if r.seq > after
                        )
                        rows.extend(
                            (p, r.seq, mi, k, t, r)
                            for t, r in e.tombstones.items()
                            if r.seq > after
                        )
        rows.sort(key=lambda r: (r[0], r[1]))
        for p, seq, mi, key, tag, rec in rows:
            if isinstance(rec, LwwRecord):
                kind = PUT if rec.value else REMOVE
                out.append(
                    mi,
                    key,
                    kind,
                    rec.millis,
                    rec.counter,
                    rec.node_id,
                    rec.value,
                    "",
                    rec.ttl_ms,
                    p,
                    seq,
                    "",
                )
            elif isinstance(rec, OrRecord):
                out.append(
                    mi,
                    key,
                    OR_ADD,
                    rec.millis,
                    rec.counter,
                    rec.node_id,
                    rec.value,
                    tag,
                    rec.ttl_ms,
                    p,
                    seq,
                    "",
                )
            else:
                out.append(
                    mi,
                    key,
                    OR_REMOVE,
                    rec.millis,
                    rec.counter,
                    rec.node_id,
                    b"",
                    tag,
                    0,
                    p,
                    seq,
                    "",
                )
        return out

    # --- rebuilding from the durable store ----------------------------------------------------

    def load_lww(
        self,
        map_name: str,
        keys: Sequence[str],
        partitions: Sequence[int],
        millis: Sequence[int],
        counters: Sequence[int],
        node_ids: Sequence[str],
        values: Sequence[bytes],
        ttl_ms: Sequence[int],
        seqs: Sequence[int],
    ) -> None:
        """Put stored LWW rows back (one map, columns of equal length; keys not yet loaded)."""
        m = self.create_map(map_name, MAP_KIND_LWW)
        names = self.intern_node_ids(node_ids)
        part = m.part
        store_seqs = self.seqs
        for k, p, ms, c, nid, v, ttl, s in zip(
            keys, partitions, millis, counters, node_ids, values, ttl_ms, seqs, strict=True
        ):
            part(p)[k] = LwwRecord(ms, c, names[nid], v, ttl, s)
            if s > store_seqs[p]:
                store_seqs[p] = s
        if not keys:
            return
        key_hash = fnv1a_many(keys)
        items = lww_item_hashes(keys, millis, counters, node_ids)
        m.leaves.add(
            np.asarray(partitions, dtype=np.intp), key_hash >> np.uint32(20), mix_many(items)
        )
        m.bucket_index = None

    def load_or(
        self,
        map_name: str,
        records: Iterable[tuple[str, int, str, bytes, int, int, str, int, int]],
        tombstones: Iterable[tuple[str, int, str, int, int, str, int]],
    ) -> None:
        """Put stored OR rows back: records ``(key, partition, tag, value, millis, counter,
        node_id, ttl_ms, seq)`` and tombstones ``(key, partition, tag, millis, counter, node_id,
        seq)``; then recompute the entry hash of every key touched."""
        m = self.create_map(map_name, MAP_KIND_OR)
        touched: dict[tuple[int, str], OrEntry] = {}
        seqs = self.seqs
        table = self._node_ids
        for key, p, tag, value, ms, c, nid, ttl, s in records:
            d = m.part(p)
            e = d.get(key)
            if e is None:
                e = d[key] = OrEntry()
            rec = OrRecord(ms, c, table.setdefault(nid, nid), value, ttl, s)
            rec.part = or_part(tag, rec, decode_value(value))
            e.records[tag] = rec
            touched[(p, key)] = e
            if s > seqs[p]:
                seqs[p] = s
        for key, p, tag, ms, c, nid, s in tombstones:
            d = m.part(p)
            e = d.get(key)
            if e is None:
                e = d[key] = OrEntry()
            e.tombstones[tag] = OrTombstone(ms, c, table.setdefault(nid, nid), s)
            e.records.pop(tag, None)
            touched[(p, key)] = e
            if s > seqs[p]:
                seqs[p] = s
        self.rehash_or(m, touched)
        m.bucket_index = None

    @staticmethod
    def rehash_or(m: MapState, touched: Mapping[tuple[int, str], OrEntry]) -> None:
        """Recompute the entry hash of ``touched`` keys and move their leaf sums accordingly."""
        if not touched:
            return
        parts: list[int] = []
        keys: list[str] = []
        deltas: list[int] = []
        for (p, key), e in touched.items():
            new = or_entry_hash(key, e)
            if new != e.entry_hash:
                parts.append(p)
                keys.append(key)
                deltas.append((mix(new) - mix(e.entry_hash)) & _MASK)
                e.entry_hash = new
        if keys:
            m.leaves.add(parts, fnv1a_many(keys) >> np.uint32(20), deltas)


def slots_of_path(path: str) -> range:
    """The leaf slots under a hex path of 0..3 digits (an invalid path selects none)."""
    if len(path) > 3 or any(c not in "0123456789abcdef" for c in path):
        return range(0)
    if not path:
        return range(LEAF_COUNT)
    width = 16 ** (3 - len(path))
    start = int(path, 16) * width
    return range(start, start + width)
