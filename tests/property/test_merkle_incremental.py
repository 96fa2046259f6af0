"""An incrementally maintained Merkle tree equals a tree rebuilt from the final records, and the
additive leaf sums of any split of the keys, added up, equal the whole map's tree."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.crdt import (
    HLC,
    LeafSums,
    LwwMap,
    LwwRecord,
    MerkleTree,
    OrMap,
    OrMerkleTree,
    Timestamp,
    fnv1a,
    fnv1a_many,
    hash_or_entry,
    leaf_slots,
    lww_item_hashes,
)

from .crdt_strategies import KEYS, T0, lww_writes, or_ops, timestamps

SETTINGS = settings(max_examples=200, deadline=None)

tree_ops = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.sampled_from(KEYS), timestamps),
        st.tuples(st.just("remove"), st.sampled_from(KEYS), st.none()),
    ),
    max_size=40,
)


def _inner_paths(tree: MerkleTree | OrMerkleTree) -> list[str]:
    return [p for p, node in tree.dump().items() if "children" in node]


def _assert_same_hashes(incremental: MerkleTree | OrMerkleTree, rebuilt: Any) -> None:
    assert incremental.root == rebuilt.root
    for path in _inner_paths(rebuilt):
        assert incremental.node_hash(path) == rebuilt.node_hash(path)
        # Emptied nodes stay in the incremental trie with hash 0; otherwise identical.
        got = {c: h for c, h in incremental.get_buckets(path).items() if h}
        assert got == {c: h for c, h in rebuilt.get_buckets(path).items() if h}
    for path in _inner_paths(incremental):
        if not incremental.has_node(path) or rebuilt.has_node(path):
            continue
        assert incremental.node_hash(path) == 0


@SETTINGS
@given(ops=tree_ops)
def test_incremental_lww_tree_equals_tree_rebuilt_from_final_entries(
    ops: list[tuple[str, str, Timestamp | None]],
) -> None:
    tree = MerkleTree()
    final: dict[str, Timestamp] = {}
    for op, key, ts in ops:
        if op == "update":
            assert ts is not None
            tree.update(key, ts)
            final[key] = ts
        else:
            tree.remove(key)
            final.pop(key, None)
    rebuilt = MerkleTree.from_records(final.items())
    _assert_same_hashes(tree, rebuilt)
    for path in rebuilt.dump():
        if len(path) == 3:
            assert sorted(tree.keys_in_bucket(path)) == sorted(rebuilt.keys_in_bucket(path))
    assert tree.leaf_sums == rebuilt.leaf_sums


@SETTINGS
@given(ops=tree_ops, reads=st.sets(st.integers(0, 40)))
def test_deferred_hashing_equals_hashing_each_change_at_once(
    ops: list[tuple[str, str, Timestamp | None]], reads: set[int]
) -> None:
    lazy = MerkleTree()  # texts queued, hashed in batches when read
    eager = MerkleTree()  # every change hashed and applied immediately
    for i, (op, key, ts) in enumerate(ops):
        if op == "update":
            assert ts is not None
            lazy.update(key, ts)
            eager.update(key, ts, key_hash=fnv1a(key))
        else:
            lazy.remove(key)
            eager.remove(key)
        if i in reads:
            assert lazy.root == eager.root
    dump, expected = lazy.dump(), eager.dump()
    assert set(dump) == set(expected)
    for path, node in expected.items():
        assert dump[path]["hash"] == node["hash"], path
        if "children" in node:
            # The same nodes were created in the same order (JavaScript bucket order).
            assert list(dump[path]["children"].items()) == list(node["children"].items()), path
        else:
            assert dump[path]["entries"] == node["entries"], path


@SETTINGS
@given(writes=lww_writes(), prune_at=timestamps)
def test_lww_map_tree_after_merges_and_prune_equals_rebuilt_tree(
    writes: list[tuple[str, LwwRecord]], prune_at: Timestamp
) -> None:
    m = LwwMap(HLC("n1", clock=lambda: T0))
    for key, rec in writes:
        m.merge(key, rec)
    pruned = m.prune(prune_at)
    assert all(k not in m for k in pruned)
    rebuilt = MerkleTree.from_records((k, r.timestamp) for k, r in m.records().items())
    _assert_same_hashes(m.merkle, rebuilt)


def _lww_split_sums(records: dict[str, LwwRecord], part_of: dict[str, int]) -> list[LeafSums]:
    parts: dict[int, list[str]] = {}
    for key in records:
        parts.setdefault(part_of[key], []).append(key)
    out = []
    for keys in parts.values():
        ts = [records[k].timestamp for k in keys]
        ls = LeafSums()
        ls.add_items(
            leaf_slots(fnv1a_many(keys)),
            lww_item_hashes(
                keys, [t.millis for t in ts], [t.counter for t in ts], [t.node_id for t in ts]
            ),
        )
        out.append(ls)
    return out


def _assert_leaf_sums_equal_tree(total: LeafSums, tree: MerkleTree | OrMerkleTree) -> None:
    assert total.root() == tree.root
    for path, node in tree.dump().items():
        assert total.node_hash(path) == node["hash"]
        if "children" in node:
            assert total.buckets(path) == {c: h for c, h in node["children"].items() if h}


@SETTINGS
@given(data=st.data(), writes=lww_writes(), n_parts=st.integers(1, 6))
def test_lww_leaf_sums_of_any_key_split_add_up_to_the_whole_tree(
    data: st.DataObject, writes: list[tuple[str, LwwRecord]], n_parts: int
) -> None:
    m = LwwMap(HLC("n1", clock=lambda: T0))
    for key, rec in writes:
        m.merge(key, rec)
    records = m.records()
    part_of = {k: data.draw(st.integers(0, n_parts - 1)) for k in records}
    sums = _lww_split_sums(records, part_of)
    total = sum(sums, LeafSums())
    _assert_leaf_sums_equal_tree(total, m.merkle)
    assert total == m.merkle.leaf_sums
    # The wire form carries the same sums; taking a partition out again restores the rest.
    assert LeafSums.from_bytes(total.to_bytes()) == total
    if sums:
        rest = sum(sums[1:], LeafSums())
        assert total - sums[0] == rest


@SETTINGS
@given(data=st.data(), ops=or_ops(), n_parts=st.integers(1, 6))
def test_or_leaf_sums_of_any_key_split_add_up_to_the_whole_tree(
    data: st.DataObject, ops: list[tuple[str, Any]], n_parts: int
) -> None:
    m = OrMap(HLC("n1", clock=lambda: T0))
    for kind, payload in ops:
        if kind == "add":
            m.apply(*payload)
        else:
            m.apply_tombstone(payload)
    parts: dict[int, list[str]] = {}
    for key in m:
        parts.setdefault(data.draw(st.integers(0, n_parts - 1)), []).append(key)
    total = LeafSums()
    for keys in parts.values():
        one = LeafSums()
        entries = np.array([hash_or_entry(k, m.records_map(k)) for k in keys], dtype=np.uint32)
        one.add_items(leaf_slots(fnv1a_many(keys)), entries)
        total += one
    _assert_leaf_sums_equal_tree(total, m.merkle)
    rebuilt = OrMerkleTree()
    for key in m:
        rebuilt.update(key, m.records_map(key))
    _assert_same_hashes(m.merkle, rebuilt)
