"""LWW and OR replicas converge to the same state and Merkle root whatever the order and
duplication of delivery, through the per-op, batch and full-state merge paths."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.crdt import HLC, LwwMap, LwwRecord, MerkleTree, OrMap, OrMerkleTree

from .crdt_strategies import NODES, T0, deliveries, lww_writes, or_ops

SETTINGS = settings(max_examples=200, deadline=None)


def _lww_replica(node: str) -> LwwMap:
    return LwwMap(HLC(node, clock=lambda: T0))


def _or_replica(node: str) -> OrMap:
    return OrMap(HLC(node, clock=lambda: T0))


def _lww_expected(writes: list[tuple[str, LwwRecord]]) -> dict[str, LwwRecord]:
    best: dict[str, LwwRecord] = {}
    for key, rec in writes:
        if key not in best or rec.timestamp > best[key].timestamp:
            best[key] = rec
    return best


@SETTINGS
@given(data=st.data(), writes=lww_writes())
def test_lww_replicas_converge_for_any_delivery_order_and_duplication(
    data: st.DataObject, writes: list[tuple[str, LwwRecord]]
) -> None:
    per_item, batched, via_sync = (_lww_replica(n) for n in NODES)
    for key, rec in data.draw(deliveries(writes)):
        per_item.merge(key, rec)
    order = data.draw(deliveries(writes))
    step = data.draw(st.integers(1, 8))
    for s in range(0, len(order), step):
        chunk = order[s : s + step]
        batched.merge_batch(
            [k for k, _ in chunk],
            [r.timestamp.millis for _, r in chunk],
            [r.timestamp.counter for _, r in chunk],
            [r.timestamp.node_id for _, r in chunk],
            [r.value for _, r in chunk],
            [r.ttl_ms for _, r in chunk],
        )
    # The third replica learns everything second hand, from the other two.
    for source in (batched, per_item):
        for key, rec in source.records().items():
            via_sync.merge(key, rec)

    expected = _lww_expected(writes)
    rebuilt = MerkleTree.from_records((k, r.timestamp) for k, r in expected.items())
    for replica in (per_item, batched, via_sync):
        assert replica.records() == expected
        assert replica.merkle.root == rebuilt.root
        assert replica.merkle.dump() == rebuilt.dump()


def _or_expected(ops: list[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    removed = {tag for kind, tag in ops if kind == "remove"}
    out: dict[str, dict[str, Any]] = {}
    for kind, payload in ops:
        if kind == "add":
            key, rec = payload
            if rec.tag not in removed:
                out.setdefault(key, {})[rec.tag] = rec
    return out


def _deliver_or(replica: OrMap, ops: list[tuple[str, Any]]) -> None:
    for kind, payload in ops:
        if kind == "add":
            replica.apply(*payload)
        else:
            replica.apply_tombstone(payload)


@SETTINGS
@given(data=st.data(), ops=or_ops())
def test_or_replicas_converge_for_any_delivery_order_and_duplication(
    data: st.DataObject, ops: list[tuple[str, Any]]
) -> None:
    one, two, three = (_or_replica(n) for n in NODES)
    _deliver_or(one, data.draw(deliveries(ops)))
    # Replica two: adds in batches, removes one by one, interleaved.
    order = data.draw(deliveries(ops))
    pending: list[tuple[str, Any]] = []
    for kind, payload in [*order, ("flush", None)]:
        if kind == "add":
            pending.append(payload)
            continue
        if pending:
            two.apply_batch([k for k, _ in pending], [r for _, r in pending])
            pending = []
        if kind == "remove":
            two.apply_tombstone(payload)
    # Replica three: a third of the ops directly, the rest through full-state merges and
    # per-key sync merges.
    direct = data.draw(deliveries(ops))
    _deliver_or(three, direct[: len(direct) // 3])
    three.merge(one)
    for key in two:
        three.merge_key(key, two.records(key), two.tombstones)
    three.merge(two)

    expected = _or_expected(ops)
    tombstones = sorted({tag for kind, tag in ops if kind == "remove"})
    rebuilt = OrMerkleTree()
    for key, recs in expected.items():
        rebuilt.update(key, recs)
    for replica in (one, two, three):
        assert replica.all_records() == expected
        assert sorted(replica.tombstones) == tombstones
        assert replica.merkle.root == rebuilt.root
        assert {k: replica.merkle.entry(k) for k in expected} == {
            k: rebuilt.entry(k) for k in expected
        }
