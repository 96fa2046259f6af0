"""The storage node's batch merge: CRDT rules with the writers' timestamps, per-op statuses for
bad input, sequence numbers, and Merkle leaf sums equal to libs/crdt trees of the same records."""

from __future__ import annotations

import json
import random
from pathlib import Path

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.crdt.hashing import PARTITION_COUNT, partition_of
from libs.crdt.hlc import Timestamp
from libs.crdt.merkle import MerkleTree, OrMerkleTree
from libs.storage_client import OR_ADD, OR_REMOVE, PUT, REMOVE, OpBatchBuilder
from services.storage.merge import BadBatch, merge_batch
from services.storage.partition_store import PartitionStore
from topgun_rpc import common_pb2, storage_pb2

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
ALL = np.ones(PARTITION_COUNT, dtype=bool)
S = storage_pb2


def pk(v: object) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def batch(*ops: tuple) -> common_pb2.OpBatch:
    b = OpBatchBuilder()
    for op in ops:
        b.append(*op)
    return b.build()


def lww_record(store: PartitionStore, m: str, key: str):  # type: ignore[no-untyped-def]
    return store.maps[m].parts[partition_of(key)][key]


def root_of(store: PartitionStore, m: str) -> int:
    from libs.crdt.merkle import LeafSums

    sums, _, _ = store.leaf_sums(m, range(PARTITION_COUNT))
    return LeafSums(sums).root()


# --- LWW rules ------------------------------------------------------------------------------


def test_lww_later_timestamp_wins_whatever_the_arrival_order() -> None:
    a, b = PartitionStore(), PartitionStore()
    new = ("m", "k", PUT, 200, 0, "n1", pk("new"))
    old = ("m", "k", PUT, 100, 5, "n2", pk("old"))
    merge_batch(a, batch(old), ALL)
    out = merge_batch(a, batch(new), ALL)
    assert out.statuses == [S.OP_APPLIED]
    merge_batch(b, batch(new), ALL)
    out = merge_batch(b, batch(old), ALL)
    assert out.statuses == [S.OP_UNCHANGED]
    assert lww_record(a, "m", "k").value == lww_record(b, "m", "k").value == pk("new")


def test_lww_ties_break_on_counter_then_node_id() -> None:
    s = PartitionStore()
    merge_batch(s, batch(("m", "k", PUT, 100, 1, "b", pk(1))), ALL)
    out = merge_batch(
        s,
        batch(("m", "k", PUT, 100, 1, "a", pk(2)), ("m", "k", PUT, 100, 1, "c", pk(3))),
        ALL,
    )
    assert out.statuses == [S.OP_UNCHANGED, S.OP_APPLIED]
    assert lww_record(s, "m", "k").node_id == "c"
    out = merge_batch(s, batch(("m", "k", PUT, 100, 2, "a", pk(4))), ALL)
    assert out.statuses == [S.OP_APPLIED]


def test_node_id_ties_rank_like_the_typescript_client_whatever_the_arrival_order() -> None:
    # localeCompare ranks "a" < "B" and "node" < "Node" (code-point order says the opposite).
    for first, second, winner in [("a", "B", "B"), ("B", "a", "B"), ("Node", "node", "Node")]:
        s = PartitionStore()
        merge_batch(s, batch(("m", "k", PUT, 100, 1, first, pk(first))), ALL)
        merge_batch(s, batch(("m", "k", PUT, 100, 1, second, pk(second))), ALL)
        assert lww_record(s, "m", "k").node_id == winner
        o = PartitionStore()
        tag = "100:1:x"
        merge_batch(o, batch(("o", "k", OR_ADD, 100, 1, first, pk(first), tag)), ALL)
        merge_batch(o, batch(("o", "k", OR_ADD, 100, 1, second, pk(second), tag)), ALL)
        assert o.maps["o"].parts[partition_of("k")]["k"].records[tag].node_id == winner


def test_reapplying_the_same_op_is_unchanged_and_takes_no_sequence_number() -> None:
    s = PartitionStore()
    op = ("m", "k", PUT, 100, 0, "n", pk("v"))
    merge_batch(s, batch(op), ALL)
    p = partition_of("k")
    seq = s.seqs[p]
    root = root_of(s, "m")
    out = merge_batch(s, batch(op, op), ALL)
    assert out.statuses == [S.OP_UNCHANGED, S.OP_UNCHANGED]
    assert len(out.changes) == 0
    assert s.seqs[p] == seq and root_of(s, "m") == root


def test_remove_keeps_a_tombstone_that_older_puts_cannot_revive() -> None:
    s = PartitionStore()
    merge_batch(s, batch(("m", "k", PUT, 100, 0, "n", pk("v"))), ALL)
    out = merge_batch(s, batch(("m", "k", REMOVE, 150, 0, "n")), ALL)
    assert out.statuses == [S.OP_APPLIED]
    assert out.changes.kinds == [REMOVE] and out.changes.values == [b""]
    assert lww_record(s, "m", "k").is_tombstone
    out = merge_batch(s, batch(("m", "k", PUT, 120, 0, "n", pk("late"))), ALL)
    assert out.statuses == [S.OP_UNCHANGED]
    assert lww_record(s, "m", "k").is_tombstone


def test_every_applied_op_takes_the_next_sequence_number_of_its_partition() -> None:
    s = PartitionStore()
    keys = [f"key-{i}" for i in range(50)]
    out = merge_batch(s, batch(*[("m", k, PUT, 100, 0, "n", pk(k)) for k in keys]), ALL)
    by_part: dict[int, list[int]] = {}
    for p, seq in zip(out.changes.partitions, out.changes.seqs, strict=True):
        by_part.setdefault(p, []).append(seq)
    for p, seqs in by_part.items():
        assert seqs == list(range(1, len(seqs) + 1))
        assert s.seqs[p] == len(seqs)


def test_changes_carry_the_origin_of_the_op() -> None:
    s = PartitionStore()
    b = OpBatchBuilder()
    b.append("m", "k", PUT, 100, 0, "n", pk(1), origin="edge-1/7")
    out = merge_batch(s, b.build(), ALL)
    assert out.changes.origins == ["edge-1/7"]


# --- bad input ------------------------------------------------------------------------------


def test_bad_ops_get_their_own_status_and_the_rest_of_the_batch_applies() -> None:
    s = PartitionStore()
    ops = batch(
        ("m", "ok1", PUT, 100, 0, "n", pk(1)),
        ("m", "kind", 42, 100, 0, "n", pk(1)),
        ("m", "nots", PUT, 0, 0, "n", pk(1)),
        ("m", "big", PUT, 100, 0, "n", b"x" * 2000),
        ("m", "empty", PUT, 100, 0, "n", b""),
        ("m", "colon", PUT, 100, 0, "a:b", pk(1)),
        ("m", "orop", OR_ADD, 100, 0, "n", pk(1), "100:0:n"),
        ("m", "ok2", PUT, 100, 0, "n", pk(2)),
    )
    out = merge_batch(s, ops, ALL, max_value_bytes=1000)
    assert out.statuses == [
        S.OP_APPLIED,
        S.OP_INVALID,
        S.OP_INVALID,
        S.OP_TOO_LARGE,
        S.OP_INVALID,
        S.OP_INVALID,
        S.OP_WRONG_MAP_TYPE,
        S.OP_APPLIED,
    ]
    errs = dict(out.errors)
    assert sorted(errs) == [1, 2, 3, 4, 5, 6]
    assert "timestamp" in errs[2] and "1000" in errs[3] and "LWW" in errs[6]
    assert set(s.maps["m"].parts[partition_of("ok2")] or {}) >= {"ok2"}


def test_or_ops_need_a_tag_and_lww_ops_are_refused_on_an_or_map() -> None:
    s = PartitionStore()
    out = merge_batch(
        s,
        batch(
            ("tags", "k", OR_ADD, 100, 0, "n", pk("red"), "100:0:n"),
            ("tags", "k", OR_ADD, 101, 0, "n", pk("blue"), ""),
            ("tags", "k", PUT, 102, 0, "n", pk("x")),
        ),
        ALL,
    )
    assert out.statuses == [S.OP_APPLIED, S.OP_INVALID, S.OP_WRONG_MAP_TYPE]


def test_ops_on_partitions_not_held_are_not_owner() -> None:
    s = PartitionStore()
    held = np.zeros(PARTITION_COUNT, dtype=bool)
    held[partition_of("mine")] = True
    out = merge_batch(
        s, batch(("m", "mine", PUT, 1, 0, "n", pk(1)), ("m", "theirs", PUT, 1, 0, "n", pk(1))), held
    )
    assert out.statuses == [S.OP_APPLIED, S.OP_NOT_OWNER]


def test_a_partition_that_does_not_match_the_key_is_invalid() -> None:
    s = PartitionStore()
    ops = batch(("m", "k", PUT, 1, 0, "n", pk(1)))
    ops.partitions[0] = (ops.partitions[0] + 1) % PARTITION_COUNT
    assert merge_batch(s, ops, ALL).statuses == [S.OP_INVALID]


def test_columns_of_different_lengths_reject_the_whole_batch() -> None:
    ops = batch(("m", "a", PUT, 1, 0, "n", pk(1)), ("m", "b", PUT, 1, 0, "n", pk(1)))
    del ops.millis[1]
    try:
        merge_batch(PartitionStore(), ops, ALL)
    except BadBatch as e:
        assert "millis" in str(e)
    else:
        raise AssertionError("a ragged batch was accepted")


# --- OR rules -------------------------------------------------------------------------------


def test_or_remove_tombstones_the_tag_and_a_late_add_of_it_is_ignored() -> None:
    s = PartitionStore()
    tag = "100:0:n"
    merge_batch(s, batch(("t", "k", OR_ADD, 100, 0, "n", pk("red"), tag)), ALL)
    out = merge_batch(s, batch(("t", "k", OR_REMOVE, 120, 0, "n", b"", tag)), ALL)
    assert out.statuses == [S.OP_APPLIED]
    entry = s.maps["t"].parts[partition_of("k")]["k"]
    assert entry.records == {} and set(entry.tombstones) == {tag}
    assert entry.entry_hash == 0
    out = merge_batch(s, batch(("t", "k", OR_ADD, 100, 0, "n", pk("red"), tag)), ALL)
    assert out.statuses == [S.OP_UNCHANGED]
    out = merge_batch(s, batch(("t", "k", OR_REMOVE, 130, 0, "n", b"", tag)), ALL)
    assert out.statuses == [S.OP_UNCHANGED]


def test_or_remove_before_its_add_still_wins() -> None:
    s = PartitionStore()
    tag = "100:0:n"
    merge_batch(s, batch(("t", "k", OR_REMOVE, 120, 0, "n", b"", tag)), ALL)
    out = merge_batch(s, batch(("t", "k", OR_ADD, 100, 0, "n", pk("red"), tag)), ALL)
    assert out.statuses == [S.OP_UNCHANGED]


def test_or_add_with_an_undecodable_value_is_invalid() -> None:
    out = merge_batch(PartitionStore(), batch(("t", "k", OR_ADD, 1, 0, "n", b"\xc1", "1:0:n")), ALL)
    assert out.statuses == [S.OP_INVALID]


def test_or_entry_hashes_match_the_topgun_vectors() -> None:
    cases = json.loads((VECTORS / "ormap_merge.json").read_text())["entry_hashes"]
    checked = 0
    for case in cases:
        if any("ttlMs" in r and r["ttlMs"] is None for r in case["records"]):
            continue  # a present-but-null ttlMs is a client-side quirk the server never stores
        s = PartitionStore()
        ops = []
        for r in case["records"]:
            ts = r["timestamp"]
            ttl = int(r.get("ttlMs") or 0)
            ops.append(
                (
                    "t",
                    case["key"],
                    OR_ADD,
                    ts["millis"],
                    ts["counter"],
                    ts["nodeId"],
                    pk(r["value"]),
                    r["tag"],
                    ttl,
                )
            )
        out = merge_batch(s, batch(*ops), ALL)
        assert all(st_ == S.OP_APPLIED for st_ in out.statuses), case["key"]
        entry = s.maps["t"].parts[partition_of(case["key"])][case["key"]]
        assert entry.entry_hash == case["entry_hash"], case["hashed_string"]
        checked += 1
    assert checked >= 8


# --- Merkle leaf sums -----------------------------------------------------------------------


def test_lww_leaf_sums_reproduce_the_topgun_merkle_vectors() -> None:
    cases = {c["name"]: c for c in json.loads((VECTORS / "merkle.json").read_text())["cases"]}
    for name in ("single_record", "twelve_records", "hundred_records"):
        case = cases[name]
        s = PartitionStore()
        ops = [
            (
                "m",
                r["key"],
                PUT,
                r["timestamp"]["millis"],
                r["timestamp"]["counter"],
                r["timestamp"]["nodeId"],
                pk(1),
            )
            for r in case["records"]
        ]
        merge_batch(s, batch(*ops), ALL)
        assert root_of(s, "m") == case["root_hash"], name


def _random_ops(rng: random.Random, n: int) -> list[tuple]:
    """Random LWW ops; an HLC timestamp names one write, so the op is a function of it."""
    ops: list[tuple] = []
    for _ in range(n):
        key = f"k{rng.randrange(30)}"
        ms, c, nid = 1000 + rng.randrange(20), rng.randrange(3), rng.choice("abc")
        kind = REMOVE if (ms + c) % 5 == 0 else PUT
        value = pk([key, ms, c, nid]) if kind == PUT else b""
        ops.append(("m", key, kind, ms, c, nid, value))
    return ops


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 80), st.integers(1, 6))
def test_lww_state_and_leaf_sums_converge_under_any_order_batching_and_duplication(
    seed: int, n: int, chunks: int
) -> None:
    rng = random.Random(seed)
    ops = _random_ops(rng, n)
    reference = PartitionStore()
    merge_batch(reference, batch(*ops), ALL)

    shuffled = ops + rng.sample(ops, k=min(len(ops), 10))  # duplicates
    rng.shuffle(shuffled)
    other = PartitionStore()
    step = max(1, len(shuffled) // chunks)
    for i in range(0, len(shuffled), step):
        merge_batch(other, batch(*shuffled[i : i + step]), ALL)

    def state(s: PartitionStore) -> dict[str, tuple]:
        return {
            k: (r.millis, r.counter, r.node_id, r.value)
            for d in s.maps["m"].parts
            if d
            for k, r in d.items()
        }

    assert state(reference) == state(other)
    tree = MerkleTree()
    for k, (ms, c, nid, _) in state(reference).items():
        tree.update(k, Timestamp(ms, c, nid))
    assert root_of(reference, "m") == root_of(other, "m") == tree.root


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60))
def test_or_leaf_sums_equal_an_or_merkle_tree_of_the_live_records(seed: int, n: int) -> None:
    rng = random.Random(seed)
    s = PartitionStore()
    tags: list[tuple[str, str]] = []
    ops: list[tuple] = []
    for i in range(n):
        if tags and rng.random() < 0.3:
            key, tag = rng.choice(tags)
            ops.append(("t", key, OR_REMOVE, 5000 + i, 0, "r", b"", tag))
        else:
            key = f"k{rng.randrange(12)}"
            tag = f"{1000 + i}:0:w"
            tags.append((key, tag))
            ttl = rng.choice([0, 0, 60000])
            ops.append(("t", key, OR_ADD, 1000 + i, 0, "w", pk({"v": rng.randrange(5)}), tag, ttl))
    for i in range(0, len(ops), 7):
        merge_batch(s, batch(*ops[i : i + 7]), ALL)

    from libs.crdt.ormap import OrRecord as CrdtOrRecord  # the client's record shape

    tree = OrMerkleTree()
    for d in s.maps["t"].parts:
        for key, entry in (d or {}).items():
            records = {
                tag: CrdtOrRecord(
                    msgpack.unpackb(r.value),
                    Timestamp(r.millis, r.counter, r.node_id),
                    tag,
                    r.ttl_ms or None,
                )
                for tag, r in entry.records.items()
            }
            tree.update(key, records)
    assert root_of(s, "t") == tree.root
