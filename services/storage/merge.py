"""Merge a batch of ops into a PartitionStore with the CRDT rules, using the writers' own
timestamps (never arrival order), and report a status per op.

The batch is validated and hashed as a whole with numpy (kinds, timestamps, sizes, partitions,
ownership, key hashes, item hashes, leaf-sum updates); only the dict lookup and the timestamp
comparison run per op. Re-applying an op is a no-op (OP_UNCHANGED).

Rules (PROTOCOL.md 4.9, Feb semantics; CRDT.md 5 and 6):
- LWW (PUT / REMOVE): the op wins iff its timestamp is strictly greater than the stored one
  (millis, then counter, then node id in code-point order). REMOVE stores a tombstone.
- OR_ADD: ignored if its tag is tombstoned on the key; inserted if the tag is new; replaces the
  stored add of that tag only with a strictly greater timestamp.
- OR_REMOVE: adds the tag to the key's tombstones (kept, with the remove's timestamp) and drops
  the add of that tag; a tag already tombstoned is a no-op.
- A map's kind (LWW or OR) is fixed by the first op that creates it; ops of the other family
  get OP_WRONG_MAP_TYPE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from libs.crdt.collation import node_id_after
from libs.crdt.hashing import PARTITION_COUNT, fnv1a_many, mix_many
from libs.crdt.merkle import lww_item_hashes
from services.storage.changes import ChangeSet
from services.storage.partition_store import (
    MAP_KIND_LWW,
    MAP_KIND_OR,
    MapState,
    PartitionStore,
    decode_value,
    or_part,
)
from services.storage.records import LwwRecord, OrEntry, OrRecord, OrTombstone
from topgun_rpc import common_pb2, storage_pb2

PUT, REMOVE, OR_ADD, OR_REMOVE = (
    int(common_pb2.PUT),
    int(common_pb2.REMOVE),
    int(common_pb2.OR_ADD),
    int(common_pb2.OR_REMOVE),
)
OP_APPLIED = int(storage_pb2.OP_APPLIED)
OP_UNCHANGED = int(storage_pb2.OP_UNCHANGED)
OP_INVALID = int(storage_pb2.OP_INVALID)
OP_TOO_LARGE = int(storage_pb2.OP_TOO_LARGE)
OP_WRONG_MAP_TYPE = int(storage_pb2.OP_WRONG_MAP_TYPE)
OP_NOT_OWNER = int(storage_pb2.OP_NOT_OWNER)

DEFAULT_MAX_VALUE_BYTES = 1 << 20


class BadBatch(ValueError):
    """The batch as a whole is malformed (columns of different lengths); nothing was applied."""


@dataclass(slots=True)
class MergeOutcome:
    statuses: list[int]
    errors: list[tuple[int, str]]  # (op index, message) for every op not APPLIED/UNCHANGED
    changes: ChangeSet
    new_maps: list[tuple[str, int]] = field(default_factory=list)  # (name, kind) created
    partitions: npt.NDArray[np.intp] | None = None  # partition of every op (fnv1a(key) % 271)


def _col(values: Sequence[Any], n: int, fill: Any, name: str) -> list[Any]:
    if len(values) == n:
        return list(values)
    if len(values) == 0:
        return [fill] * n
    raise BadBatch(f"column {name} has {len(values)} entries for {n} ops")


def merge_batch(
    store: PartitionStore,
    ops: common_pb2.OpBatch,
    held: npt.NDArray[np.bool_],
    *,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    given_seqs: Sequence[int] | None = None,
    primary: bool = True,
) -> MergeOutcome:
    """Merge ``ops`` into ``store``. ``held[p]`` says whether this call may write partition p
    (others get OP_NOT_OWNER). ``given_seqs`` (replication) are the primary's sequence numbers
    of the ops; without them each applied op takes the next seq of its partition."""
    n = len(ops.keys)
    keys = list(ops.keys)
    kinds = _col(ops.kinds, n, 0, "kinds")
    millis = _col(ops.millis, n, 0, "millis")
    counters = _col(ops.counters, n, 0, "counters")
    node_ids = _col(ops.node_ids, n, "", "node_ids")
    values = _col(ops.values, n, b"", "values")
    tags = _col(ops.tags, n, "", "tags")
    ttls = _col(ops.ttl_ms, n, 0, "ttl_ms")
    origins = _col(ops.origins, n, "", "origins")
    map_names = list(ops.map_names)
    map_index = _col(ops.map_index, n, 0, "map_index")
    sent_parts = _col(ops.partitions, n, -1, "partitions") if len(ops.partitions) else None
    if given_seqs is not None and len(given_seqs) != n:
        raise BadBatch(f"{len(given_seqs)} seqs for {n} ops")
    statuses = [OP_APPLIED] * n
    errors: list[tuple[int, str]] = []
    changes = ChangeSet(map_names, primary=primary)
    outcome = MergeOutcome(statuses, errors, changes)
    if n == 0:
        return outcome

    # --- whole-batch validation -----------------------------------------------------------------
    key_hash = fnv1a_many(keys)
    parts_a = (key_hash % np.uint32(PARTITION_COUNT)).astype(np.intp)
    outcome.partitions = parts_a
    kinds_a = np.asarray(kinds, dtype=np.int64)
    millis_a = np.asarray(millis, dtype=np.int64)
    lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
    mi_a = np.asarray(map_index, dtype=np.int64)
    is_or = (kinds_a == OR_ADD) | (kinds_a == OR_REMOVE)
    checks: list[tuple[npt.NDArray[np.bool_], int, str]] = [
        ((kinds_a < PUT) | (kinds_a > OR_REMOVE), OP_INVALID, "unknown op kind"),
        ((mi_a < 0) | (mi_a >= len(map_names)), OP_INVALID, "map_index out of range"),
        (millis_a <= 0, OP_INVALID, "missing timestamp (millis must be > 0)"),
        ((kinds_a == PUT) & (lens == 0), OP_INVALID, "PUT without a value (use REMOVE)"),
        (lens > max_value_bytes, OP_TOO_LARGE, f"value over the {max_value_bytes}-byte limit"),
    ]
    if is_or.any():
        tag_lens = np.fromiter(map(len, tags), dtype=np.int64, count=n)
        checks.append((is_or & (tag_lens == 0), OP_INVALID, "OR op without a tag"))
    bad_nodes = {nid for nid in set(node_ids) if ":" in nid}
    if bad_nodes:
        mask = np.fromiter((nid in bad_nodes for nid in node_ids), dtype=bool, count=n)
        checks.append((mask, OP_INVALID, "node id must not contain ':'"))
    if any(not name for name in map_names):
        empty = [i for i, name in enumerate(map_names) if not name]
        checks.append((np.isin(mi_a, empty), OP_INVALID, "empty map name"))
    if sent_parts is not None:
        mismatch = np.asarray(sent_parts, dtype=np.int64) != parts_a
        checks.append((mismatch, OP_INVALID, "partition does not match fnv1a(key) % 271"))
    checks.append(
        (~held[parts_a], OP_NOT_OWNER, "partition not writable here; send it to its primary")
    )
    any_bad = checks[0][0].copy()
    for mask, _, _ in checks[1:]:
        any_bad |= mask
    if not any_bad.any():  # the common case: one test instead of one per check
        valid = np.arange(n)
    else:
        bad = np.zeros(n, dtype=bool)
        for mask, code, msg in checks:
            new = mask & ~bad
            if new.any():
                for i in np.flatnonzero(new).tolist():
                    statuses[i] = code
                    errors.append((i, msg))
                bad |= new
        valid = np.flatnonzero(~bad)
    if len(valid) == 0:
        errors.sort()
        return outcome

    # --- per map --------------------------------------------------------------------------------
    parts = parts_a.tolist()
    names = store.intern_node_ids(node_ids)
    if len(map_names) == 1:
        groups = {0: valid.tolist()}
    else:
        groups = {}
        for i in valid.tolist():
            groups.setdefault(map_index[i], []).append(i)
    cols = _Columns(keys, kinds, millis, counters, node_ids, values, tags, ttls, origins, parts)
    for mi, idx in groups.items():
        name = map_names[mi]
        state = store.maps.get(name)
        if state is None:
            kind = MAP_KIND_OR if kinds[idx[0]] in (OR_ADD, OR_REMOVE) else MAP_KIND_LWW
            state = store.create_map(name, kind)
            outcome.new_maps.append((name, kind))
        want_or = state.kind == MAP_KIND_OR
        ok: list[int] = []
        for i in idx:
            if (kinds[i] >= OR_ADD) != want_or:
                statuses[i] = OP_WRONG_MAP_TYPE
                errors.append(
                    (i, f"map {name!r} is an {'OR' if want_or else 'LWW'} map; this op is not")
                )
            else:
                ok.append(i)
        if want_or:
            _merge_or(store, state, mi, ok, cols, names, statuses, errors, changes, given_seqs)
        else:
            _merge_lww(store, state, mi, ok, cols, names, key_hash, statuses, changes, given_seqs)
    errors.sort()
    return outcome


class _Columns:
    __slots__ = (
        "counters",
        "keys",
        "kinds",
        "millis",
        "node_ids",
        "origins",
        "parts",
        "tags",
        "ttls",
        "values",
    )

    def __init__(self, *cols: list[Any]) -> None:
        (
            self.keys,
            self.kinds,
            self.millis,
            self.counters,
            self.node_ids,
            self.values,
            self.tags,
            self.ttls,
            self.origins,
            self.parts,
        ) = cols


def _merge_lww(
    store: PartitionStore,
    state: MapState,
    mi: int,
    idx: list[int],
    c: _Columns,
    names: dict[str, str],
    key_hash: npt.NDArray[np.uint32],
    statuses: list[int],
    changes: ChangeSet,
    given_seqs: Sequence[int] | None,
) -> None:
    keys, kinds, millis, counters = c.keys, c.kinds, c.millis, c.counters
    node_ids, values, ttls, parts = c.node_ids, c.values, c.ttls, c.parts
    seqs = store.seqs
    dicts = state.parts
    applied: list[int] = []
    applied_seqs: list[int] = []
    replaced: list[int] = []  # positions in `applied` whose op replaced a record
    old_recs: list[LwwRecord] = []
    new_keys: list[int] = []
    for i in idx:
        p = parts[i]
        d = dicts[p]
        if d is None:
            d = dicts[p] = {}
        key = keys[i]
        old = d.get(key)
        m = millis[i]
        cnt = counters[i]
        nid = names[node_ids[i]]
        if old is not None and (
            m < old.millis
            or (
                m == old.millis
                and (
                    cnt < old.counter
                    or (cnt == old.counter and not node_id_after(nid, old.node_id))
                )
            )
        ):
            statuses[i] = OP_UNCHANGED
            if given_seqs is not None and given_seqs[i] > seqs[p]:
                seqs[p] = given_seqs[i]
            continue
        if given_seqs is None:
            seq = seqs[p] + 1
            seqs[p] = seq
        else:
            seq = given_seqs[i]
            if seq > seqs[p]:
                seqs[p] = seq
        d[key] = LwwRecord(m, cnt, nid, values[i] if kinds[i] == PUT else b"", ttls[i], seq)
        if old is None:
            new_keys.append(i)
        else:
            replaced.append(len(applied))
            old_recs.append(old)
        applied.append(i)
        applied_seqs.append(seq)
    if not applied:
        return
    a_keys = [keys[i] for i in applied]
    a_kinds = [kinds[i] for i in applied]
    a_parts = [parts[i] for i in applied]
    a_millis = [millis[i] for i in applied]
    a_counters = [counters[i] for i in applied]
    a_nodes = [names[node_ids[i]] for i in applied]
    changes.extend(
        mi,
        a_keys,
        a_kinds,
        a_millis,
        a_counters,
        a_nodes,
        [values[i] if k == PUT else b"" for i, k in zip(applied, a_kinds, strict=True)],
        None,
        [ttls[i] for i in applied],
        a_parts,
        applied_seqs,
        [c.origins[i] for i in applied],
    )
    new_mixed = mix_many(lww_item_hashes(a_keys, a_millis, a_counters, a_nodes))
    if old_recs:
        old_mixed = mix_many(
            lww_item_hashes(
                [a_keys[j] for j in replaced],
                [r.millis for r in old_recs],
                [r.counter for r in old_recs],
                [r.node_id for r in old_recs],
            )
        )
        new_mixed[replaced] -= old_mixed
    ai = np.asarray(applied, dtype=np.intp)
    slots = key_hash[ai] >> np.uint32(20)
    state.leaves.add(a_parts, slots, new_mixed)
    if new_keys and state.bucket_index is not None:
        state.index_new_keys(
            [keys[i] for i in new_keys],
            (key_hash[np.asarray(new_keys, dtype=np.intp)] >> np.uint32(20)).tolist(),
        )


def _merge_or(
    store: PartitionStore,
    state: MapState,
    mi: int,
    idx: list[int],
    c: _Columns,
    names: dict[str, str],
    statuses: list[int],
    errors: list[tuple[int, str]],
    changes: ChangeSet,
    given_seqs: Sequence[int] | None,
) -> None:
    seqs = store.seqs
    touched: dict[tuple[int, str], OrEntry] = {}
    new_keys: list[str] = []
    for i in idx:
        p = c.parts[i]
        d = state.part(p)
        key = c.keys[i]
        tag = c.tags[i]
        m, cnt, nid = c.millis[i], c.counters[i], names[c.node_ids[i]]
        entry = d.get(key)
        if entry is None:
            entry = OrEntry()
        kind = c.kinds[i]
        decoded: Any = None
        if kind == OR_ADD:
            old = entry.records.get(tag)
            if tag in entry.tombstones or (
                old is not None
                and (
                    (m, cnt) < (old.millis, old.counter)
                    or (
                        (m, cnt) == (old.millis, old.counter)
                        and not node_id_after(nid, old.node_id)
                    )
                )
            ):
                statuses[i] = OP_UNCHANGED
                _bump(seqs, p, given_seqs, i)
                continue
            try:
                decoded = decode_value(c.values[i])
            except Exception as e:
                statuses[i] = OP_INVALID
                errors.append((i, f"value is not valid msgpack: {e}"))
                continue
        elif tag in entry.tombstones:
            statuses[i] = OP_UNCHANGED
            _bump(seqs, p, given_seqs, i)
            continue
        if key not in d:
            d[key] = entry
            new_keys.append(key)
        seq = _next_seq(seqs, p, given_seqs, i)
        if kind == OR_ADD:
            rec = OrRecord(m, cnt, nid, c.values[i], c.ttls[i], seq)
            rec.part = or_part(tag, rec, decoded)
            entry.records[tag] = rec
            changes.append(
                mi, key, OR_ADD, m, cnt, nid, rec.value, tag, rec.ttl_ms, p, seq, c.origins[i]
            )
        else:
            entry.tombstones[tag] = OrTombstone(m, cnt, nid, seq)
            entry.records.pop(tag, None)
            changes.append(mi, key, OR_REMOVE, m, cnt, nid, b"", tag, 0, p, seq, c.origins[i])
        touched[(p, key)] = entry
    PartitionStore.rehash_or(state, touched)
    if new_keys and state.bucket_index is not None:
        state.index_new_keys(new_keys, (fnv1a_many(new_keys) >> np.uint32(20)).tolist())


def _bump(seqs: list[int], p: int, given: Sequence[int] | None, i: int) -> None:
    if given is not None and given[i] > seqs[p]:
        seqs[p] = given[i]


def _next_seq(seqs: list[int], p: int, given: Sequence[int] | None, i: int) -> int:
    if given is None:
        seqs[p] += 1
        return seqs[p]
    s = given[i]
    if s > seqs[p]:
        seqs[p] = s
    return s
