"""The read side of a node's PartitionStore: live records vs tombstones, TTL expiry, bucket
paths, and the store-as-log view the change feed and replication resync read."""

from __future__ import annotations

import msgpack
import numpy as np

from libs.crdt.hashing import PARTITION_COUNT, fnv1a, hash_hex, partition_of
from libs.storage_client import OR_ADD, OR_REMOVE, PUT, REMOVE, OpBatchBuilder
from services.storage.merge import merge_batch
from services.storage.partition_store import PartitionStore, slots_of_path

ALL = np.ones(PARTITION_COUNT, dtype=bool)
EVERY = range(PARTITION_COUNT)


def store_with(*ops: tuple) -> PartitionStore:
    s = PartitionStore()
    b = OpBatchBuilder()
    for op in ops:
        b.append(*op)
    merge_batch(s, b.build(), ALL)
    return s


def test_iter_records_hides_tombstones_unless_asked_and_expired_ttls_when_given_a_clock() -> None:
    s = store_with(
        ("m", "live", PUT, 1000, 0, "n", msgpack.packb(1)),
        ("m", "short", PUT, 1000, 0, "n", msgpack.packb(2), "", 50),
        ("m", "dead", REMOVE, 1000, 0, "n"),
    )
    keys = lambda **kw: sorted(k for _, k, _, _ in s.iter_records("m", EVERY, **kw))  # noqa: E731
    assert keys() == ["live", "short"]
    assert keys(include_tombstones=True) == ["dead", "live", "short"]
    assert keys(now_ms=1050) == ["live", "short"]  # visible at exactly millis + ttl
    assert keys(now_ms=1051) == ["live"]


def test_or_rows_list_every_live_tag_and_tombstones_on_request() -> None:
    s = store_with(
        ("t", "k", OR_ADD, 1, 0, "n", msgpack.packb("a"), "1:0:n"),
        ("t", "k", OR_ADD, 2, 0, "n", msgpack.packb("b"), "2:0:n"),
        ("t", "k", OR_REMOVE, 3, 0, "n", b"", "1:0:n"),
    )
    assert [t for _, _, t, _ in s.iter_records("t", EVERY)] == ["2:0:n"]
    tags = sorted(t for _, _, t, _ in s.iter_records("t", EVERY, include_tombstones=True))
    assert tags == ["1:0:n", "2:0:n"]


def test_bucket_rows_select_keys_by_hash_prefix_and_partition() -> None:
    keys = [f"key-{i}" for i in range(300)]
    s = store_with(*[("m", k, PUT, 1, 0, "n", msgpack.packb(k)) for k in keys])
    k0 = keys[0]
    path = hash_hex(fnv1a(k0))[:2]
    got = {k for _, k, _, _ in s.bucket_rows("m", [path], EVERY)}
    assert got == {k for k in keys if hash_hex(fnv1a(k)).startswith(path)} and k0 in got
    only = {k for _, k, _, _ in s.bucket_rows("m", [path], [partition_of(k0)])}
    assert k0 in only and all(partition_of(k) == partition_of(k0) for k in only)
    # A key written after the index exists is found too.
    b = OpBatchBuilder()
    b.append("m", "late", PUT, 1, 0, "n", msgpack.packb(1))
    merge_batch(s, b.build(), ALL)
    late_path = hash_hex(fnv1a("late"))[:3]
    assert "late" in {k for _, k, _, _ in s.bucket_rows("m", [late_path], EVERY)}


def test_paths_map_to_leaf_slot_ranges() -> None:
    assert slots_of_path("") == range(4096)
    assert slots_of_path("a") == range(0xA00, 0xB00)
    assert slots_of_path("a1f") == range(0xA1F, 0xA20)
    assert len(slots_of_path("xyz")) == 0 and len(slots_of_path("abcd")) == 0


def test_changes_since_gives_the_newest_state_per_key_in_seq_order_per_partition() -> None:
    s = store_with(*[("m", f"k{i}", PUT, 1, 0, "n", msgpack.packb(i)) for i in range(40)])
    b = OpBatchBuilder()
    b.append("m", "k3", PUT, 5, 0, "n", msgpack.packb("new"))
    b.append("m", "k3", REMOVE, 6, 0, "n")
    merge_batch(s, b.build(), ALL)
    cs = s.changes_since(None, EVERY, {})
    assert len(cs) == 40 and cs.keys.count("k3") == 1
    i = cs.keys.index("k3")
    assert cs.kinds[i] == REMOVE and cs.millis[i] == 6
    pairs = list(zip(cs.partitions, cs.seqs, strict=True))
    assert pairs == sorted(pairs)
    p3 = partition_of("k3")
    later = s.changes_since({"m"}, [p3], {p3: s.seqs[p3] - 1})
    assert later.keys == ["k3"]
    assert len(s.changes_since({"other"}, EVERY, {})) == 0
