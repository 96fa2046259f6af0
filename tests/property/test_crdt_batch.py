"""The batch APIs equal their one-by-one counterparts (state and tree); batch hashing equals
scalar hashing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.crdt import (
    HLC,
    LwwMap,
    LwwRecord,
    OrMap,
    fnv1a,
    fnv1a_many,
    lww_item_hash,
    lww_item_hashes,
)

from .crdt_strategies import T0, lww_writes, or_ops

SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(writes=lww_writes(max_size=40), initial=lww_writes(max_size=10))
def test_lww_merge_batch_equals_merging_one_by_one(
    writes: list[tuple[str, LwwRecord]], initial: list[tuple[str, LwwRecord]]
) -> None:
    one = LwwMap(HLC("s", clock=lambda: T0))
    batch = LwwMap(HLC("s", clock=lambda: T0))
    for key, rec in initial:
        one.merge(key, rec)
        batch.merge(key, rec)
    stored = [one.merge(k, r) for k, r in writes]
    got = batch.merge_batch(
        [k for k, _ in writes],
        [r.timestamp.millis for _, r in writes],
        [r.timestamp.counter for _, r in writes],
        [r.timestamp.node_id for _, r in writes],
        [r.value for _, r in writes],
        [r.ttl_ms for _, r in writes],
    )
    assert got.tolist() == stored
    assert batch.records() == one.records()
    assert batch.merkle.dump() == one.merkle.dump()
    # The clock is past every record either way.
    if writes:
        newest = max(r.timestamp for _, r in writes)
        assert batch.hlc.now() > newest


@SETTINGS
@given(ops=or_ops(max_size=40))
def test_or_apply_batch_equals_applying_one_by_one(ops: list[tuple[str, object]]) -> None:
    adds = [p for kind, p in ops if kind == "add"]
    removes = [p for kind, p in ops if kind == "remove"]
    one = OrMap(HLC("s", clock=lambda: T0))
    batch = OrMap(HLC("s", clock=lambda: T0))
    for tag in removes[:2]:  # a few tags are tombstoned before the adds arrive
        one.apply_tombstone(tag)  # type: ignore[arg-type]
        batch.apply_tombstone(tag)  # type: ignore[arg-type]
    expected = [one.apply(k, r) for k, r in adds]  # type: ignore[misc]
    got = batch.apply_batch([k for k, _ in adds], [r for _, r in adds])  # type: ignore[misc]
    assert got == expected
    assert batch.all_records() == one.all_records()
    assert batch.merkle.dump() == one.merkle.dump()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=20), max_size=40))
def test_fnv1a_many_equals_scalar_for_any_strings(strings: list[str]) -> None:
    assert fnv1a_many(strings).tolist() == [fnv1a(s) for s in strings]


@SETTINGS
@given(writes=lww_writes())
def test_lww_item_hashes_equal_scalar(writes: list[tuple[str, LwwRecord]]) -> None:
    got = lww_item_hashes(
        [k for k, _ in writes],
        [r.timestamp.millis for _, r in writes],
        [r.timestamp.counter for _, r in writes],
        [r.timestamp.node_id for _, r in writes],
    )
    assert got.tolist() == [lww_item_hash(k, r.timestamp) for k, r in writes]
