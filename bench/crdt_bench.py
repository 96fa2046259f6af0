"""CRDT core throughput: LWW merges and OR adds with the Merkle tree maintained, leaf-sum root
recomputation, FNV-1a. Prints one JSON object; medians of 3 runs, in process CPU time (the
machine is shared, so wall time measures the neighbours too). Map runs end by reading the
Merkle root, so deferred hashing is paid inside the measured time.

    .venv/bin/python bench/crdt_bench.py [--keys 100000] [--leaf-keys 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libs.crdt import (
    HLC,
    LeafSums,
    LwwMap,
    LwwRecord,
    OrMap,
    OrRecord,
    Timestamp,
    fnv1a,
    fnv1a_many,
    leaf_slots,
    lww_item_hashes,
)

T0 = 1_700_000_000_000
RUNS = 3


def _median_time(setup: Callable[[], Any], run: Callable[[Any], Any]) -> float:
    times = []
    for _ in range(RUNS):
        state = setup()
        start = time.process_time()
        run(state)
        times.append(time.process_time() - start)
    return statistics.median(times)


def _hlc(node: str = "server") -> HLC:
    return HLC(node, clock=lambda: T0 + 10_000)


def bench_lww(n: int) -> dict[str, Any]:
    keys = [f"key-{i:08d}" for i in range(n)]
    millis = [T0 + i // 7 for i in range(n)]
    counters = [i % 7 for i in range(n)]
    node_ids = [f"client-{i % 13:02d}" for i in range(n)]
    values = [{"n": i, "name": "x"} for i in range(n)]
    records = [
        LwwRecord(v, Timestamp(m, c, nid))
        for v, m, c, nid in zip(values, millis, counters, node_ids, strict=True)
    ]

    def per_item(m: LwwMap) -> None:
        merge = m.merge
        for k, r in zip(keys, records, strict=True):
            merge(k, r)
        _ = m.merkle.root

    def batch_of(size: int) -> Callable[[LwwMap], None]:
        def run(m: LwwMap) -> None:
            for s in range(0, n, size):
                m.merge_batch(
                    keys[s : s + size],
                    millis[s : s + size],
                    counters[s : s + size],
                    node_ids[s : s + size],
                    values[s : s + size],
                )
            _ = m.merkle.root

        return run

    def fresh() -> LwwMap:
        return LwwMap(_hlc())

    newer = [LwwRecord(r.value, Timestamp(r.timestamp.millis + 1, 0, "z")) for r in records]

    def filled() -> LwwMap:
        m = fresh()
        m.merge_batch(keys, millis, counters, node_ids, values)
        return m

    def per_item_update(m: LwwMap) -> None:
        merge = m.merge
        for k, r in zip(keys, newer, strict=True):
            merge(k, r)
        _ = m.merkle.root

    out = {
        "lww_merges_per_s_per_item_new_keys": n / _median_time(fresh, per_item),
        "lww_merges_per_s_per_item_overwrite": n / _median_time(filled, per_item_update),
        "lww_merges_per_s_batch_1000": n / _median_time(fresh, batch_of(1000)),
        "lww_merges_per_s_batch_all": n / _median_time(fresh, batch_of(n)),
    }
    # Sanity: both paths build the same tree.
    a, b = fresh(), fresh()
    per_item(a)
    batch_of(1000)(b)
    assert a.merkle.root == b.merkle.root
    return out


def bench_or(n: int) -> dict[str, Any]:
    keys = [f"key-{i:08d}" for i in range(n)]
    records = [
        OrRecord(f"v{i}", ts, str(ts))
        for i, ts in enumerate(
            Timestamp(T0 + i // 7, i % 7, f"client-{i % 13:02d}") for i in range(n)
        )
    ]

    def fresh() -> OrMap:
        return OrMap(_hlc())

    def apply_all(m: OrMap) -> None:
        apply = m.apply
        for k, r in zip(keys, records, strict=True):
            apply(k, r)
        _ = m.merkle.root

    def add_all(m: OrMap) -> None:
        add = m.add
        for i, k in enumerate(keys):
            add(k, i)
        _ = m.merkle.root

    def apply_batches(m: OrMap) -> None:
        for s in range(0, n, 1000):
            m.apply_batch(keys[s : s + 1000], records[s : s + 1000])
        _ = m.merkle.root

    a, b = fresh(), fresh()
    apply_all(a)
    apply_batches(b)
    assert a.merkle.root == b.merkle.root

    return {
        "or_adds_per_s_remote_apply": n / _median_time(fresh, apply_all),
        "or_adds_per_s_batch_1000": n / _median_time(fresh, apply_batches),
        "or_adds_per_s_local_add": n / _median_time(fresh, add_all),
    }


def bench_leaf_sums(n: int) -> dict[str, Any]:
    keys = [f"key-{i:08d}" for i in range(n)]
    t = time.process_time()
    key_hashes = fnv1a_many(keys)
    item_hashes = lww_item_hashes(keys, [T0 + i for i in range(n)], [0] * n, ["server"] * n)
    hash_time = time.process_time() - t
    slots = leaf_slots(key_hashes)

    def build(_: None) -> LeafSums:
        ls = LeafSums()
        ls.add_items(slots, item_hashes)
        return ls

    build_s = _median_time(lambda: None, build)
    ls = build(None)

    def root_from_scratch(copies: list[LeafSums]) -> None:
        for one in copies:
            one.root()

    root_s = _median_time(lambda: [LeafSums(ls.sums) for _ in range(100)], root_from_scratch) / 100
    # The edge's job: add the arrays of all partitions, then the upper levels.
    parts = np.asarray(key_hashes % np.uint32(271))
    per_partition = []
    for p in range(271):
        sel = parts == p
        one = LeafSums()
        one.add_items(slots[sel], item_hashes[sel])
        per_partition.append(one)

    def combine_partitions(_: None) -> None:
        for _ in range(10):
            total = LeafSums()
            for one in per_partition:
                total += one
            total.root()

    combine_s = _median_time(lambda: None, combine_partitions) / 10
    total = LeafSums()
    for one in per_partition:
        total += one
    assert total.root() == ls.root()
    return {
        "leaf_sums_keys": n,
        "leaf_sums_hash_keys_and_items_s": hash_time,
        "leaf_sums_build_from_hashes_s": build_s,
        "merkle_root_from_leaf_sums_s": root_s,
        "merkle_root_from_271_partition_leaf_sums_s": combine_s,
    }


def bench_fnv(n: int) -> dict[str, Any]:
    short = [f"user-{i:05d}" for i in range(n)]  # 10 characters
    item = [f"user-{i:05d}:{T0 + i}:{i % 5}:client-{i % 13:02d}" for i in range(n)]

    def scalar(strings: list[str]) -> Callable[[None], None]:
        def run(_: None) -> None:
            for s in strings:
                fnv1a(s)

        return run

    def many(strings: list[str]) -> Callable[[None], None]:
        def run(_: None) -> None:
            fnv1a_many(strings)

        return run

    return {
        "fnv1a_per_s_scalar_10_chars": n / _median_time(lambda: None, scalar(short)),
        "fnv1a_per_s_many_10_chars": n / _median_time(lambda: None, many(short)),
        "fnv1a_per_s_scalar_item_string_38_chars": n / _median_time(lambda: None, scalar(item)),
        "fnv1a_per_s_many_item_string_38_chars": n / _median_time(lambda: None, many(item)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=100_000, help="keys for the map benchmarks")
    ap.add_argument(
        "--leaf-keys", type=int, default=1_000_000, help="keys for the leaf-sum benchmark"
    )
    args = ap.parse_args()
    out: dict[str, Any] = {"keys": args.keys, "runs": RUNS}
    out.update(bench_lww(args.keys))
    out.update(bench_or(args.keys))
    out.update(bench_leaf_sums(args.leaf_keys))
    out.update(bench_fnv(args.keys))
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
