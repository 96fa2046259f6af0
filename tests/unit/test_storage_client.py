"""The storage client's pure parts: batch building, sub-batches per owner, rows from pages."""

from __future__ import annotations

import numpy as np

from libs.crdt.hashing import partition_of
from libs.storage_client import (
    OR_ADD,
    PUT,
    REMOVE,
    OpBatchBuilder,
    add_leaf_sums,
    changes_from_batch,
    records_from_batch,
)
from topgun_rpc import common_pb2, storage_pb2


def _builder() -> OpBatchBuilder:
    b = OpBatchBuilder()
    b.append("users", "u1", PUT, 100, 0, "n1", b"\xa1a", origin="e/1")
    b.append("tags", "t1", OR_ADD, 101, 2, "n2", b"\xa3red", tag="101:2:n2")
    b.append("users", "u2", REMOVE, 102, 0, "n1")
    b.append("users", "é🙂", PUT, 103, 1, "n3", b"\x01", ttl_ms=5000)
    return b


def test_builder_computes_every_partition_with_the_key_hash() -> None:
    batch = _builder().build()
    assert list(batch.partitions) == [partition_of(k) for k in batch.keys]


def test_builder_interns_map_names_and_indexes_them_per_op() -> None:
    batch = _builder().build()
    assert list(batch.map_names) == ["users", "tags"]
    assert list(batch.map_index) == [0, 1, 0, 0]


def test_select_keeps_only_the_chosen_ops_with_their_own_map_table() -> None:
    sub = _builder().select([1, 3])
    assert list(sub.keys) == ["t1", "é🙂"]
    assert [sub.map_names[i] for i in sub.map_index] == ["tags", "users"]
    assert list(sub.tags) == ["101:2:n2", ""]
    assert list(sub.ttl_ms) == [0, 5000]
    assert list(sub.partitions) == [partition_of("t1"), partition_of("é🙂")]


def test_records_from_batch_reads_every_column_in_order() -> None:
    ops = _builder().build()
    page = common_pb2.RecordBatch(
        map_names=ops.map_names,
        map_index=ops.map_index,
        keys=ops.keys,
        kinds=ops.kinds,
        millis=ops.millis,
        counters=ops.counters,
        node_ids=ops.node_ids,
        values=ops.values,
        tags=ops.tags,
        ttl_ms=ops.ttl_ms,
        partitions=ops.partitions,
        seqs=[1, 2, 3, 4],
    )
    rows = records_from_batch(page)
    assert [(r.map_name, r.key, r.kind, r.seq) for r in rows] == [
        ("users", "u1", PUT, 1),
        ("tags", "t1", OR_ADD, 2),
        ("users", "u2", REMOVE, 3),
        ("users", "é🙂", PUT, 4),
    ]
    assert rows[2].is_tombstone and not rows[0].is_tombstone
    assert rows[1].timestamp == (101, 2, "n2")


def test_changes_from_batch_carries_seqs_origins_and_the_catch_up_mark() -> None:
    ops = _builder().build()
    page = changes_from_batch(
        storage_pb2.ChangeBatch(ops=ops, seqs=[7, 8, 9, 10], node_id="s1", caught_up=True)
    )
    assert page.caught_up and page.node_id == "s1"
    assert [c.seq for c in page.changes] == [7, 8, 9, 10]
    assert page.changes[0].origin == "e/1"
    assert page.changes[1].record.tag == "101:2:n2"


def test_add_leaf_sums_wraps_in_uint32() -> None:
    a = np.full(4096, 0xFFFFFFFF, dtype=np.uint32)
    b = np.full(4096, 2, dtype=np.uint32)
    assert int(add_leaf_sums([a, b])[0]) == 1
