"""merkle.json: the LWW and OR tries node for node, and the additive leaf-sum form."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from libs.crdt import (
    LeafSums,
    MerkleTree,
    OrMerkleTree,
    OrRecord,
    Timestamp,
    combine,
    fnv1a,
    hash_hex,
    hash_or_entry,
    leaf_slot,
    lww_item_hash,
    lww_item_hashes,
    partition_of,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "merkle.json").read_text("utf-8"))
CASES = {c["name"]: c for c in VECTORS["cases"]}


def _records(case: dict[str, Any]) -> list[tuple[str, Timestamp]]:
    if case.get("records"):
        return [(r["key"], Timestamp.from_wire(r["timestamp"])) for r in case["records"]]
    return []


def _tree(records: list[tuple[str, Timestamp]]) -> MerkleTree:
    tree = MerkleTree()
    for key, ts in records:
        tree.update(key, ts)
    return tree


def _leaf_sums(records: list[tuple[str, Timestamp]]) -> LeafSums:
    ls = LeafSums()
    for key, ts in records:
        ls.add_item(leaf_slot(fnv1a(key)), lww_item_hash(key, ts))
    return ls


def _assert_nodes(tree: MerkleTree | OrMerkleTree, nodes: dict[str, Any]) -> None:
    dump = tree.dump()
    assert set(dump) == set(nodes)
    for path, expected in nodes.items():
        got = dump[path]
        assert got == expected, path
        if "children" in expected:
            # JavaScript object order: digits numerically, then letters by insertion.
            assert list(got["children"]) == list(expected["children"]), path
            assert tree.get_buckets(path) == expected["children"]
        else:
            assert tree.keys_in_bucket(path) == list(expected["entries"]), path
        assert tree.node_hash(path) == expected["hash"]


def _assert_leaf_sums_agree(tree: MerkleTree | OrMerkleTree, ls: LeafSums) -> None:
    assert ls.root() == tree.root
    for path, node in tree.dump().items():
        assert ls.node_hash(path) == node["hash"], path
        if "children" in node:
            assert ls.buckets(path) == {c: h for c, h in node["children"].items() if h}, path


def _assert_chain(tree: MerkleTree, chain: list[dict[str, Any]]) -> None:
    for link in chain:
        path = link["path"]
        assert tree.node_hash(path) == link["hash"], path
        if "buckets" in link:
            assert tree.get_buckets(path) == link["buckets"], path
            assert list(tree.get_buckets(path)) == list(link["buckets"]), path
        if "keys_in_bucket" in link:
            assert tree.keys_in_bucket(path) == link["keys_in_bucket"], path


def _check_record_fields(case: dict[str, Any]) -> None:
    for r in case["records"]:
        ts = Timestamp.from_wire(r["timestamp"])
        assert f"{r['key']}:{ts.millis}:{ts.counter}:{ts.node_id}" == r["item_string"]
        assert lww_item_hash(r["key"], ts) == r["item_hash"]
        assert hash_hex(fnv1a(r["key"])) == r["path_hex"]


def test_empty_tree() -> None:
    case = CASES["empty"]
    tree = _tree([])
    assert tree.root == case["root_hash"] == 0
    assert tree.get_buckets("") == case["buckets_at_root"]
    _assert_nodes(tree, case["nodes"])
    assert LeafSums().root() == 0
    assert LeafSums().buckets("") == {}


@pytest.mark.parametrize("name", ["single_record", "twelve_records"])
def test_tree_built_from_records(name: str) -> None:
    case = CASES[name]
    _check_record_fields(case)
    records = _records(case)
    tree = _tree(records)
    assert tree.root == case["root_hash"]
    _assert_nodes(tree, case["nodes"])
    _assert_leaf_sums_agree(tree, _leaf_sums(records))
    assert tree.leaf_sums == _leaf_sums(records)


def test_batch_item_hashes_equal_scalar_for_twelve_records() -> None:
    case = CASES["twelve_records"]
    ts = [Timestamp.from_wire(r["timestamp"]) for r in case["records"]]
    got = lww_item_hashes(
        [r["key"] for r in case["records"]],
        [t.millis for t in ts],
        [t.counter for t in ts],
        [t.node_id for t in ts],
    )
    assert got.tolist() == [r["item_hash"] for r in case["records"]]


def test_update_existing_key_changes_only_with_a_new_timestamp() -> None:
    case = CASES["update_existing_key"]
    records = _records(CASES[case["base"]])
    tree = _tree(records)
    assert tree.root == case["root_before"]
    ts_user3 = dict(records)["user-3"]
    tree.update("user-3", ts_user3)  # same timestamp, any value: no change
    assert tree.root == case["root_after_same_timestamp_new_value"]
    new_ts = Timestamp.from_wire(case["new_timestamp_for_user_3"])
    tree.update("user-3", new_ts)
    assert tree.root == case["root_after_new_timestamp"]
    assert hash_hex(fnv1a(case["path_after"]["key"])) == case["path_after"]["path_hex"]
    _assert_chain(tree, case["path_after"]["chain"])
    updated = [(k, new_ts if k == "user-3" else t) for k, t in records]
    _assert_leaf_sums_agree(tree, _leaf_sums(updated))


def test_remove_keys_leaves_emptied_nodes_with_hash_zero() -> None:
    case = CASES["remove_keys"]
    records = _records(CASES[case["base"]])
    tree = _tree(records)
    for key in case["removed"]:
        tree.remove(key)
    assert tree.root == case["root_after"]
    remaining = [(k, t) for k, t in records if k not in case["removed"]]
    assert _tree(remaining).root == case["root_of_fresh_tree_with_remaining_records"]
    _assert_nodes(tree, case["nodes"])
    _assert_leaf_sums_agree(tree, _leaf_sums(remaining))


def _hundred() -> list[tuple[str, Timestamp]]:
    rule = CASES["hundred_records"]["record_rule"]
    t0 = rule["T"]
    return [(f"k{i}", Timestamp(t0 + 7 * i, i % 3, f"n{i % 4}")) for i in range(100)]


def test_hundred_records_root_buckets_and_paths() -> None:
    case = CASES["hundred_records"]
    records = _hundred()
    _check_record_fields(case)
    assert [(r["key"], Timestamp.from_wire(r["timestamp"])) for r in case["records"]] == records
    tree = _tree(records)
    assert tree.root == case["root_hash"]
    assert tree.get_buckets("") == case["buckets_at_root"]
    assert list(tree.get_buckets("")) == case["bucket_key_order_at_root"]
    for p in case["paths"]:
        assert hash_hex(fnv1a(p["key"])) == p["path_hex"]
        _assert_chain(tree, p["chain"])
    ls = _leaf_sums(records)
    _assert_leaf_sums_agree(tree, ls)
    assert list(ls.buckets("")) == case["bucket_key_order_at_root"]


def test_rust_server_style_aggregate_differs_from_the_single_trie() -> None:
    case = CASES["hundred_records_rust_server_style_aggregate"]
    by_partition: dict[int, list[tuple[str, Timestamp]]] = defaultdict(list)
    for key, ts in _hundred():
        by_partition[partition_of(key)].append((key, ts))
    assert len(by_partition) == case["partitions_used"]
    trees = [_tree(recs) for recs in by_partition.values()]
    assert combine(t.root for t in trees) == case["root_hash"]
    buckets: dict[str, list[int]] = defaultdict(list)
    for t in trees:
        for c, h in t.get_buckets("").items():
            buckets[c].append(h)
    assert {c: combine(hs) for c, hs in buckets.items()} == case["buckets_at_root"]
    # Leaf sums of the partitions add up to the single trie the client computes instead.
    total = sum((_leaf_sums(recs) for recs in by_partition.values()), LeafSums())
    assert total.root() == case["single_trie_root_for_comparison"] != case["root_hash"]


def test_ormap_tree() -> None:
    case = CASES["ormap_tree"]
    tree = OrMerkleTree()
    ls = LeafSums()
    for e in case["entries"]:
        assert hash_hex(fnv1a(e["key"])) == e["path_hex"]
        records = [OrRecord.from_wire(r) for r in e["records"]]
        assert hash_or_entry(e["key"], records) == e["entry_hash"]
        tree.update(e["key"], {r.tag: r for r in records})
        ls.add_item(leaf_slot(fnv1a(e["key"])), e["entry_hash"])
    assert tree.root == case["root_hash"]
    _assert_nodes(tree, case["nodes"])
    _assert_leaf_sums_agree(tree, ls)
    tree.update("tagset-3", {})
    assert tree.root == case["root_after_removing_tagset_3"]
